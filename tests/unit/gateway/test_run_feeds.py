"""Watched runs: one shared poll per run, events on change, release on disconnect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import delete, event, update

from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.gateway.run_events import HEARTBEAT, event_stream
from jobs_service.gateway.run_feeds import RunFeeds, RunState
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun
from jobs_service.infrastructure.repositories import runs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(sqlite_url: str) -> AsyncIterator[Database]:
    db = Database(sqlite_url, DatabaseSettings())
    await migrate.upgrade(db)
    yield db
    await db.close()


async def _queued(database: Database) -> RunState:
    run_id = new_run_id()
    row = runs.QueuedRun(run_id, "report_steps", {}, "api", datetime.now(UTC))
    async with database.engine.begin() as connection:
        await runs.insert_queued_runs(connection, [row])
    async with database.sessions() as session:
        found = await runs.get_run(session, run_id=run_id)
    assert found is not None
    return RunState.of(found)


async def _set(database: Database, run_id: str, **values: Any) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(update(JobRun).where(JobRun.run_id == run_id).values(**values))


async def _next_event(stream: AsyncIterator[bytes]) -> bytes:
    """The next chunk that is not a heartbeat."""
    while (chunk := await asyncio.wait_for(anext(stream), 5)) == HEARTBEAT:
        pass
    return chunk


async def test_two_clients_share_one_poll_and_leaving_stops_it(database: Database) -> None:
    """Two streams of one run: one feed, polled once; changes reach both; when the first
    client leaves the poll goes on, when the second leaves it stops."""
    feeds = RunFeeds(database, poll_interval_s=0.02)
    state = await _queued(database)
    first = event_stream(feeds, state, heartbeat_s=0.05, retry_ms=1000)
    second = event_stream(feeds, state, heartbeat_s=0.05, retry_ms=1000)
    try:
        assert await anext(first) == b"retry: 1000\n\n"
        assert b'"status":"queued"' in await _next_event(first)
        assert await anext(second) == b"retry: 1000\n\n"
        assert b'"status":"queued"' in await _next_event(second)
        assert feeds.watched == 1
        assert feeds.polling
        progress = {"percent": 30, "message": "m", "at": "2026-01-01T00:00:00+00:00"}
        await _set(database, state.run_id, status="running", attempt=1, progress=progress)
        for stream in (first, second):
            chunk = await _next_event(stream)
            assert chunk.index(b"event: status") < chunk.index(b"event: progress")
            assert b'"percent":30' in chunk
        await first.aclose()  # a client disconnects
        assert (feeds.watched, feeds.polling) == (1, True)
        await second.aclose()
        assert feeds.watched == 0
        await _stopped(feeds)
    finally:
        await first.aclose()
        await second.aclose()
        await feeds.aclose()


async def _stopped(feeds: RunFeeds) -> None:
    """Wait (up to 1 s) for the poller to end, as it does once nobody watches."""
    for _ in range(100):
        if not feeds.polling:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the poller still runs with nobody watching")


class _HeldRead:
    """Stands in for the poller's database read: it starts, then waits for
    ``release`` (forever if never set), noting in ``reads`` how it ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from jobs_service.gateway import run_feeds  # noqa: PLC0415

        self.reading, self.release = asyncio.Event(), asyncio.Event()
        self.reads: list[str] = []
        self._read = run_feeds.read_live_states
        monkeypatch.setattr(run_feeds, "read_live_states", self)

    async def __call__(self, session: Any, run_ids: list[str]) -> Any:
        self.reads.append("started")
        self.reading.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.reads.append("cancelled")
            raise
        self.reads.append("finished")
        return await self._read(session, run_ids)


async def _watching_mid_read(
    database: Database, held: _HeldRead
) -> tuple[RunFeeds, AsyncIterator[bytes]]:
    """A feed with one client whose poller is inside its (held) read."""
    feeds = RunFeeds(database, poll_interval_s=0.01)
    stream = event_stream(feeds, await _queued(database), heartbeat_s=0.05, retry_ms=0)
    await anext(stream)
    await _next_event(stream)
    await asyncio.wait_for(held.reading.wait(), 5)
    return feeds, stream


async def test_the_last_watcher_leaving_lets_a_read_under_way_finish(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that leaves while the poller reads does not cancel the read (on
    PostgreSQL, asyncpg drops a connection whose query is cut off): the read ends, its
    result goes nowhere, and then the poller stops without another read."""
    held = _HeldRead(monkeypatch)
    feeds, stream = await _watching_mid_read(database, held)
    try:
        await stream.aclose()  # the client leaves mid-read
        await asyncio.sleep(0.05)
        held.release.set()
        await _stopped(feeds)
    finally:
        await stream.aclose()
        await feeds.aclose()
    assert held.reads == ["started", "finished"]


async def test_a_shutdown_cancelled_while_a_read_finishes_still_stops_the_poller(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's shutdown gives a read under way time to finish; if the shutdown
    itself is cancelled meanwhile (a second signal, a lifespan timeout), the poller is
    stopped all the same instead of polling on with nobody to stop it."""
    held = _HeldRead(monkeypatch)  # never released
    feeds, stream = await _watching_mid_read(database, held)
    try:
        closing = asyncio.create_task(feeds.aclose(read_timeout_s=5))
        await asyncio.sleep(0.05)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
    finally:
        await stream.aclose()
    assert held.reads == ["started", "cancelled"]


async def test_a_stream_ends_with_the_final_status_and_a_deleted_run_ends_it_quietly(
    database: Database,
) -> None:
    """The run ends: the last event is its final status (id `end`) and the feed is gone.
    A run deleted while watched (retention cleanup) ends its stream without an event."""
    feeds = RunFeeds(database, poll_interval_s=0.02)
    ending, deleted = await _queued(database), await _queued(database)
    ends = event_stream(feeds, ending, heartbeat_s=0.05, retry_ms=0)
    vanishes = event_stream(feeds, deleted, heartbeat_s=0.05, retry_ms=0)
    try:
        for stream in (ends, vanishes):
            await anext(stream)
            await _next_event(stream)
        await _set(database, ending.run_id, status="succeeded", attempt=1, summary={"errors": 0})
        final = await _next_event(ends)
        assert final.startswith(b"id: end\nevent: status\n")
        assert b'"summary":{"errors":0}' in final
        with pytest.raises(StopAsyncIteration):
            await anext(ends)
        async with database.engine.begin() as connection:
            await connection.execute(delete(JobRun).where(JobRun.run_id == deleted.run_id))
        with pytest.raises(StopAsyncIteration):
            await _next_event(vanishes)
        assert feeds.watched == 0
    finally:
        await ends.aclose()
        await vanishes.aclose()
        await feeds.aclose()


async def test_all_watched_runs_are_read_by_one_query_per_interval(database: Database) -> None:
    """Three runs watched for ~10 intervals: about ten reads in all, not thirty."""
    reads: list[str] = []

    def count(*args: Any) -> None:
        statement = args[2]
        if "FROM job_runs" in statement and "duration_ms" in statement:
            reads.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    feeds = RunFeeds(database, poll_interval_s=0.05)
    states = [await _queued(database) for _ in range(3)]
    streams = [event_stream(feeds, state, heartbeat_s=1, retry_ms=0) for state in states]
    try:
        for stream in streams:
            await anext(stream)
            await _next_event(stream)
        assert feeds.watched == 3
        reads.clear()
        await asyncio.sleep(0.5)
        assert 3 <= len(reads) <= 11
        assert all(statement.count("?") == 3 for statement in reads)  # the three run ids
    finally:
        for stream in streams:
            await stream.aclose()
        await feeds.aclose()
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
