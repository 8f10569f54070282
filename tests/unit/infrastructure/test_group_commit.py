"""Group commit: concurrent callers share writes, each gets its own answer or the error."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from jobs_service.infrastructure.group_commit import Failed, GroupCommit

if TYPE_CHECKING:
    from collections.abc import Sequence

pytestmark = pytest.mark.anyio


class Recorder:
    """A ``write`` that records its batches and can be held open or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_on: set[int] = set()

    async def write(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
            if self.fail_on & set(items):
                msg = "the database went away"
                raise ConnectionError(msg)
            return [f"done {item}" for item in items]
        finally:
            self.running -= 1


async def test_concurrent_callers_share_one_write_and_get_their_own_results() -> None:
    """Forty callers arriving together: one write, each caller its own result."""
    recorder = Recorder()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write)
    results = await asyncio.gather(*[commits.submit(n) for n in range(40)])
    assert results == [f"done {n}" for n in range(40)]
    assert recorder.batches == [list(range(40))]


async def test_callers_arriving_during_a_write_form_the_next_batch() -> None:
    """While a write is under way, newcomers wait and are then written together."""
    recorder = Recorder()
    recorder.release.clear()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(commits.submit(n)) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    assert commits.waiting == 5
    recorder.release.set()
    assert await asyncio.gather(first, *later) == [f"done {n}" for n in range(6)]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failed_write_fails_every_caller_of_its_batch_only() -> None:
    """The batch holding a failure raises for all its callers; the next batch is written."""
    recorder = Recorder()
    recorder.release.clear()
    recorder.fail_on = {3}
    commits: GroupCommit[int, str] = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0.01)
    doomed = [asyncio.ensure_future(commits.submit(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0.01)
    recorder.release.set()
    assert await first == "done 0"
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert await commits.submit(4) == "done 4"
    assert recorder.batches == [[0], [1, 2, 3], [4]]


async def test_a_caller_that_stops_waiting_does_not_stop_its_batch() -> None:
    """A cancelled request leaves the write running; the others get their results."""
    recorder = Recorder()
    recorder.release.clear()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write)
    callers = [asyncio.ensure_future(commits.submit(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    callers[1].cancel()
    recorder.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert results[0] == "done 0"
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] == "done 2"
    assert recorder.batches == [[0, 1, 2]]


async def test_up_to_writers_batches_are_written_at_once() -> None:
    """With two writers a second batch starts while the first is held; never a third."""
    recorder = Recorder()
    recorder.release.clear()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, writers=2)
    waves = []
    for wave in range(3):
        waves += [asyncio.ensure_future(commits.submit(wave * 10 + n)) for n in range(3)]
        await asyncio.sleep(0.01)
    assert recorder.running == 2
    assert commits.waiting == 3
    recorder.release.set()
    await asyncio.gather(*waves)
    assert recorder.most_running == 2
    assert sorted(item for batch in recorder.batches for item in batch) == sorted(
        wave * 10 + n for wave in range(3) for n in range(3)
    )


async def test_batches_are_cut_at_max_batch() -> None:
    """More callers than ``max_batch``: several writes, none larger than the limit."""
    recorder = Recorder()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, max_batch=4)
    await asyncio.gather(*[commits.submit(n) for n in range(10)])
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]


async def test_a_write_returning_the_wrong_number_of_results_fails_its_callers() -> None:
    """A result per item or an error for all: no caller gets someone else's answer."""

    async def short(items: Sequence[int]) -> list[str]:
        return ["only one"]

    commits: GroupCommit[int, str] = GroupCommit(short)
    outcomes = await asyncio.gather(*[commits.submit(n) for n in range(2)], return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


async def test_shutting_the_writer_down_releases_every_waiting_caller() -> None:
    """Cancelling the writer (shutdown) cancels its batch and what waited behind it."""
    recorder = Recorder()
    recorder.release.clear()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0.01)
    behind = asyncio.ensure_future(commits.submit(1))
    await asyncio.sleep(0.01)
    for task in asyncio.all_tasks():
        if task.get_name() == "group-commit":
            task.cancel()
    outcomes = await asyncio.gather(first, behind, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)


async def test_submit_many_keeps_its_items_in_order_across_batches() -> None:
    """Seven items with batches of three: written 3 + 3 + 1, answered in order."""
    recorder = Recorder()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, max_batch=3)
    results = await commits.submit_many(list(range(7)))
    assert results == [f"done {n}" for n in range(7)]
    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_submit_many_raises_the_error_of_a_failed_batch_and_others_still_write() -> None:
    """A batch that fails fails the call; a caller beside it still gets its answer."""
    recorder = Recorder()
    recorder.fail_on = {4}
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, max_batch=3)
    many = asyncio.ensure_future(commits.submit_many(list(range(6))))
    lone = asyncio.ensure_future(commits.submit(10))
    with pytest.raises(ConnectionError, match="went away"):
        await many
    assert await lone == "done 10"
    assert await commits.submit_many([]) == []


async def test_an_item_that_failed_alone_fails_only_its_caller() -> None:
    """A write that reports one item as Failed (the others written): that caller gets
    the error, every other caller of the batch its result."""

    async def write(items: Sequence[int]) -> list[str | Failed]:
        refused = ValueError("refused by the database")
        return [Failed(refused) if item == 3 else f"done {item}" for item in items]

    commits: GroupCommit[int, str] = GroupCommit(write)
    results = await asyncio.gather(*[commits.submit(n) for n in range(6)], return_exceptions=True)
    assert [str(r) for r in results] == [
        "done 0",
        "done 1",
        "done 2",
        "refused by the database",
        "done 4",
        "done 5",
    ]
    assert isinstance(results[3], ValueError)


async def test_a_caller_waits_timeout_s_at_most_and_its_item_is_still_written() -> None:
    """With a write that hangs, its caller and those queued behind it each give up
    timeout_s after they submitted; their items are written once the write moves on."""
    recorder = Recorder()
    recorder.release.clear()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stuck = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0.1)
    behind = asyncio.ensure_future(commits.submit_many([1, 2]))
    with pytest.raises(TimeoutError, match=r"not written within 0\.2 s"):
        await stuck
    stuck_s = loop.time() - started
    with pytest.raises(TimeoutError):
        await behind
    behind_s = loop.time() - started
    recorder.release.set()
    assert await commits.submit(3) == "done 3"
    assert recorder.batches == [[0], [1, 2, 3]]  # the timed-out items too
    assert 0.2 <= stuck_s < 0.5
    assert 0.3 <= behind_s < 0.6


async def test_callers_answered_in_time_are_not_timed_out() -> None:
    """A deadline that passes after its caller got its result changes nothing."""
    recorder = Recorder()
    commits: GroupCommit[int, str] = GroupCommit(recorder.write, timeout_s=0.05)
    assert await commits.submit_many([1, 2]) == ["done 1", "done 2"]
    await asyncio.sleep(0.1)
    assert await commits.submit(3) == "done 3"
