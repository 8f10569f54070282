"""A loopback server that speaks just enough of PostgreSQL's protocol to refuse a
connection the way a server that is not serving does (starting up, shutting down, out
of connection slots): an ``ErrorResponse`` to the startup message."""

from __future__ import annotations

import asyncio
import contextlib
import struct

__all__ = ["RefusingPostgres"]

#: Requests a client may send before its startup message (SSL and GSS encryption),
#: each answered "not supported" (``N``) so the client goes on in plain text.
_ENCRYPTION_REQUESTS = (80877103, 80877104)


class RefusingPostgres:
    """Answers every connection's startup message with a FATAL error of SQLSTATE
    ``sqlstate``, as PostgreSQL does, then closes it. :attr:`url` points at it."""

    def __init__(self, sqlstate: str, message: str) -> None:
        fields = b"".join(
            tag + value.encode() + b"\0"
            for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
        )
        self._error = b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0"
        self._server: asyncio.Server | None = None
        #: Startup messages refused so far.
        self.refused = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://jobs@127.0.0.1:{self.port}/jobs"

    async def __aenter__(self) -> RefusingPostgres:
        self._server = await asyncio.start_server(self._refuse, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                (code,) = struct.unpack("!i", (await reader.readexactly(length - 4))[:4])
                if code in _ENCRYPTION_REQUESTS:
                    writer.write(b"N")
                    continue
                writer.write(self._error)
                await writer.drain()
                self.refused += 1
                break
        writer.close()
