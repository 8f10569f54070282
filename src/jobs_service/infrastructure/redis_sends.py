"""Script calls to Redis that tell a refused send from an unconfirmed one.

A send that fails has either not reached Redis (no connection could be made: nothing
was queued) or may have (its command was written and no answer came: a timeout, a
connection dropped midway; a Redis that stalled runs what it received once it resumes).
The caller must not answer the second as the first: "nothing was queued" invites a
resubmit, which then queues the run twice. redis-py's ``execute_command`` cannot tell
them apart: it raises the same errors for both, and retries a command whose answer
timed out (the broker's connections are made with ``retry_on_timeout``), so a stalled
send could even be added twice by itself.

:func:`call_script` makes one attempt. It takes a connection from the pool as redis-py
does (connecting, or replacing one the server closed meanwhile) and checks its health
when due; a failure up to there is raised as it is, as nothing was sent. It then writes
``EVALSHA`` (``EVAL`` when Redis does not know the script) and reads the answer: any
failure from the write on is a :class:`SendUnconfirmedError`, and the connection is
closed (its late answer must not be read by the next command). An error *answer*
(``ResponseError``) is raised as it is: Redis answered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from jobs_service.infrastructure.redis_scripts import ADD_MESSAGES, ADD_MESSAGES_ONCE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import ConnectionPool
    from redis.asyncio.connection import AbstractConnection
    from taskiq.message import BrokerMessage

__all__ = ["LuaScript", "SendUnconfirmedError", "add_messages", "call_script", "sent_marker"]

#: One script call blocks Redis while it runs: keep each well under a millisecond or two.
_MAX_SCRIPT_MESSAGES = 1000


class SendUnconfirmedError(RedisConnectionError):
    """The command was written to Redis and no answer came: Redis may have run it, or
    may still run it (once it resumes)."""


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script and its SHA-1, as ``EVALSHA`` names it."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


_ADD = LuaScript(ADD_MESSAGES)
_ADD_ONCE = LuaScript(ADD_MESSAGES_ONCE)


async def add_messages(
    pool: ConnectionPool,
    messages: Sequence[BrokerMessage],
    default_queue: str,
    maxlen: int | None,
    *,
    once_for_s: int | None = None,
) -> None:
    """Add ``messages`` to their streams (the ``queue_name`` label, else
    ``default_queue``): one script call per stream and thousand messages.

    ``once_for_s``: add each queueing of a run once at most, however often it is sent
    (``ADD_MESSAGES_ONCE``; its :func:`sent_marker` is kept that many seconds). For runs
    that may be sent again after a send whose outcome was unknown; other sends skip
    the markers' cost.

    Raises :class:`SendUnconfirmedError` when a call was sent and not answered (its
    messages may be added), and Redis's errors otherwise (nothing of that call was).
    """
    if not messages:
        return
    by_stream: dict[str, list[BrokerMessage]] = {}
    for message in messages:
        queue = message.labels.get("queue_name") or default_queue
        by_stream.setdefault(queue, []).append(message)
    limit = "" if maxlen is None else str(maxlen)
    for queue, queued in by_stream.items():
        for start in range(0, len(queued), _MAX_SCRIPT_MESSAGES):
            chunk = queued[start : start + _MAX_SCRIPT_MESSAGES]
            datas = [message.message for message in chunk]
            if once_for_s is None:
                await call_script(pool, _ADD, [queue], [limit, *datas])
            else:
                markers = [sent_marker(queue, message) for message in chunk]
                await call_script(pool, _ADD_ONCE, [queue, *markers], [limit, once_for_s, *datas])


def sent_marker(queue: str, message: BrokerMessage) -> str:
    """The key saying that a queueing of a run was added to ``queue``: one per run id
    and ``queued_at`` label (an operator's retry queues a run again, with a new one)."""
    queued_at = message.labels.get("queued_at")
    suffix = f":{queued_at}" if queued_at is not None else ""
    return f"{queue}:sent:{message.task_id}{suffix}"


async def call_script(
    pool: ConnectionPool, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run ``script`` once and return its answer.

    Raises what redis-py raises when no connection could be made (nothing was sent),
    ``ResponseError`` when Redis answered with an error, and
    :class:`SendUnconfirmedError` when the command was written and its answer did not
    come.
    """
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.check_health()
        try:
            return await _evaluate(connection, "EVALSHA", script.sha, keys, args)
        except NoScriptError:  # a Redis that restarted, or another one: not run
            return await _evaluate(connection, "EVAL", script.source, keys, args)
    finally:
        await pool.release(connection)


async def _evaluate(
    connection: AbstractConnection,
    command: str,
    body: str,
    keys: Sequence[str],
    args: Sequence[Any],
) -> Any:
    packed = connection.pack_command(command, body, len(keys), *keys, *args)
    try:
        await connection.send_packed_command(packed, check_health=False)
        return await connection.read_response()
    except ResponseError:
        raise
    except BaseException as exc:
        await connection.disconnect(nowait=True)
        if isinstance(exc, Exception):
            msg = f"Redis did not answer a command it was sent ({type(exc).__name__}: {exc})"
            raise SendUnconfirmedError(msg) from exc
        raise
