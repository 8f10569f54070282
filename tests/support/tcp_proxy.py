"""A loopback TCP proxy that can black-hole the connections it carries, or cut them."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["BlackHoleProxy"]


class BlackHoleProxy:
    """Forwards connections to ``host:port``; :meth:`black_hole` stops forwarding on the
    connections open at that moment (they stay open and carry nothing, as after a
    failover or a partition: no reset to react to), while new ones are forwarded.

    ``cut_on``: while set, a client's bytes holding it are not forwarded, and the
    connection is closed instead: a command written that never reached the server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.cut_on: bytes | None = None
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._open: list[asyncio.Event] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen on a free loopback port (:attr:`port`)."""
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def black_hole(self) -> None:
        """Forward nothing more on the connections open now."""
        for silenced in self._open:
            silenced.set()
        self._open = []

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        silenced = asyncio.Event()
        self._open.append(silenced)
        pumps = [
            self._pump(reader, upstream_writer, silenced, cut=writer),
            self._pump(upstream_reader, writer, silenced),
        ]
        for coroutine in pumps:
            pump = asyncio.create_task(coroutine)
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        target: asyncio.StreamWriter,
        silenced: asyncio.Event,
        cut: asyncio.StreamWriter | None = None,
    ) -> None:
        try:
            while data := await source.read(65536):
                if silenced.is_set():
                    await asyncio.Event().wait()  # held open, never forwarded
                if cut is not None and self.cut_on is not None and self.cut_on in data:
                    cut.close()
                    return
                target.write(data)
                await target.drain()
        finally:
            with contextlib.suppress(Exception):
                target.close()
