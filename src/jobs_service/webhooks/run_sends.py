"""Sending the runs of stored webhook events to the broker, without holding their senders.

Once a batch of events and their ``queued`` runs is committed, nothing is lost whatever
the send does: a run the broker did not take is sent by the relay. So a webhook request
waits for the send only ``webhooks.send_timeout_s`` (1 s). Without that bound a Redis
that hangs (a partition, a stopped host: no reset, no answer) held every answer for the
client's socket timeouts and retries, about 14 s, and senders give up sooner (GitHub
after 10 s), then deliver again.

A send that outlives the bound is not cancelled. Its bytes may already be with Redis,
which runs what it received once it answers again; cancelling and leaving the runs to
the relay would then queue a second message of each run, and each run would execute
twice (at least once allows it, but it need not happen). So the send goes on in the
background: if the broker takes the runs their events are marked ``enqueued`` as usual,
if it fails they stay ``accepted`` for the relay. Until it is over the runs stay *in
flight*, and this process's relay leaves them alone however old their events look.

What is left: a send that fails by the client's own timeout although its command
reached a hung Redis (or a relay in another process that finds the events meanwhile)
can still queue a run twice; the copies carry the same run id, and a run's effects are
keyed by it (the domain API's ``Idempotency-Key``, one delivery per run and target).
Relays' own sends are deduplicated per run (``JobsClient.resend``: two relays never
both add a run), but these first sends are not: a marker per webhook in Redis would
cost every event of the ingestion path, for a case that needs a send timing out while
its command still reaches Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobs_service.client import EnqueueError
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import webhooks as repo

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobs_service.client import JobsClient, RunRequest
    from jobs_service.infrastructure.database import Database
    from jobs_service.webhooks.enqueued_marks import EnqueuedMarks

__all__ = ["RunSends"]

_log = get_logger("jobs_service.webhooks")
#: How long stopping waits for sends still under way before cancelling them (their
#: runs then wait for a relay).
_CLOSE_WAIT_S = 5.0


class RunSends:
    """Sends runs of stored events; tracks the runs whose send is not over."""

    def __init__(
        self, database: Database, client: JobsClient, marks: EnqueuedMarks, *, timeout_s: float
    ) -> None:
        self._database = database
        self._client = client
        self._marks = marks
        self._timeout_s = timeout_s
        #: Run ids committed or being sent and not yet marked: not the relay's to send.
        self.in_flight: set[str] = set()
        self._under_way: set[asyncio.Task[None]] = set()

    def hold(self, run_ids: Iterable[str]) -> set[str]:
        """Keep the relay off these runs (from before their commit); returns them for
        :meth:`release` or :meth:`send_committed`."""
        held = set(run_ids)
        self.in_flight |= held
        return held

    def release(self, held: set[str]) -> None:
        """The runs' send is over (or they were never stored)."""
        self.in_flight -= held

    async def send_committed(self, requests: list[RunRequest], held: set[str]) -> None:
        """Send a committed batch's runs, waiting ``timeout_s`` at most: beyond it the
        send goes on in the background. Sent, their events are marked ``enqueued``; the
        runs ``held`` stay in flight until the send is over."""
        if not requests:
            self.release(held)
            return
        sending = asyncio.create_task(self._send_and_mark(requests, held), name="webhook-send")
        self._under_way.add(sending)
        sending.add_done_callback(self._under_way.discard)
        done, _ = await asyncio.wait({sending}, timeout=self._timeout_s)
        if done:
            sending.result()  # what the send raised, if anything, is the request's error
            return
        sending.add_done_callback(_report_late_failure)
        _log.warning(
            "webhook-enqueue-deferred",
            events=len(requests),
            error=f"the broker has not answered within {self._timeout_s:g} s",
            message="events are stored; the send goes on, and the relay enqueues them if it fails",
        )

    async def _send_and_mark(self, requests: list[RunRequest], held: set[str]) -> None:
        try:
            if await self.send(requests, mark_now=False):
                self._marks.add((r.webhook_event_id or 0, r.run_id) for r in requests)
        finally:
            self.release(held)

    async def send(self, requests: list[RunRequest], *, mark_now: bool = True) -> bool:
        """Send runs; False (logged) if the broker refused them: their events stay
        ``accepted`` for the relay. ``mark_now`` marks the events ``enqueued`` at once."""
        if not requests:
            return True
        try:
            await self._client.send(requests)
        except EnqueueError as exc:
            _log.warning(
                "webhook-enqueue-deferred",
                events=len(requests),
                error=str(exc),
                message="events are stored; the relay will enqueue them",
            )
            return False
        if mark_now:
            async with self._database.engine.begin() as connection:
                await repo.mark_enqueued(
                    connection,
                    [(r.webhook_event_id or 0, r.run_id) for r in requests],
                    datetime.now(UTC),
                )
        return True

    async def aclose(self) -> None:
        """Let sends under way finish (for a while), then cancel the rest: their runs
        are stored, and a relay sends them."""
        if not self._under_way:
            return
        _, late = await asyncio.wait(set(self._under_way), timeout=_CLOSE_WAIT_S)
        for sending in late:
            sending.cancel()
        for sending in late:
            with contextlib.suppress(asyncio.CancelledError):
                await sending


def _report_late_failure(sending: asyncio.Task[None]) -> None:
    """A send that failed after its request was answered: nobody else would say so."""
    if sending.cancelled() or sending.exception() is None:
        return
    error = sending.exception()
    _log.error(
        "webhook-send-failed",
        error_type=type(error).__name__,
        error=str(error)[:300],
        message="events are stored; the relay will enqueue them",
    )
