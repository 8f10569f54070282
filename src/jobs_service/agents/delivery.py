"""Deliver a run's result (counts and markdown) to Teams channels, mailboxes, calendars.

Each destination is claimed in ``deliveries`` before it is sent and marked after, so:

- a retried run skips what an earlier attempt already sent (no duplicate reports);
- two attempts running at once cannot both send the same message;
- every failure is on record with its error, and a later retry sends only what failed.

Failures do not stop the other destinations: everything deliverable is delivered, then
one error sums up what failed (retryable if any failure is). What each message says,
and how big it may be, is :mod:`~jobs_service.agents.rendering`'s.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from jobs_service.agents.delivery_metrics import count_delivery
from jobs_service.agents.rendering import (
    MAX_TITLE_CHARS,
    TEAMS_CONTENT_BYTES,
    TEAMS_HTML_BYTES,
    RunResult,
    capped,
    fitted_for_teams,
    mail_html,
    render_html,
    teams_card,
    teams_html,
)
from jobs_service.core.delivery import EmailTarget
from jobs_service.core.errors import ConfigurationError, JobsError, PermanentError, RetryLater
from jobs_service.core.logging import get_logger
from jobs_service.infrastructure.repositories import deliveries

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.agents.graph import GraphAgent
    from jobs_service.agents.teams import TeamsWorkflows
    from jobs_service.core.delivery import CalendarTarget, DeliverTo, DeliveryTarget
    from jobs_service.core.settings import ChannelSettings
    from jobs_service.infrastructure.database import Database

__all__ = [
    "TEAMS_CONTENT_BYTES",
    "TEAMS_HTML_BYTES",
    "DeliveryReport",
    "ResultDelivery",
    "RunResult",
    "fitted_for_teams",
    "render_html",
]

_log = get_logger("jobs_service.delivery")
#: A `sending` row this old belongs to an attempt that died mid-send. Its age is taken
#: on the database's clock (``repositories.deliveries``), whatever this worker's says.
_STALE_SENDING = timedelta(minutes=5)
#: Tries to record a send before giving up (0.5 s, then 1 s between them).
_MARK_SENT_TRIES = 3
#: Records of sends finishing after their delivery was cut short (see ``deliver``).
_RECORDING: set[asyncio.Future[None]] = set()


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """How many messages this call sent, and how many earlier attempts had sent."""

    sent: int
    already_sent: int

    @property
    def delivered(self) -> int:
        """Messages delivered in all, now or before."""
        return self.sent + self.already_sent


class ResultDelivery:
    """Sends results through the Teams and Graph agents, recording every message."""

    def __init__(
        self,
        database: Database,
        channels: ChannelSettings,
        teams: TeamsWorkflows,
        graph: Callable[[], GraphAgent],
    ) -> None:
        self._database = database
        self._channels = channels
        self._teams = teams
        self._graph = graph

    async def deliver(self, result: RunResult, deliver_to: DeliverTo) -> DeliveryReport:
        """Send to every target not yet sent; raise if any failed, after trying all."""
        sent = already = 0
        failures: list[tuple[DeliveryTarget, JobsError]] = []
        for target in deliver_to.targets():
            async with self._database.engine.begin() as connection:
                claim = await deliveries.claim(
                    connection,
                    run_id=result.run_id,
                    channel=target.channel,
                    target=target.target,
                    stale_after=_STALE_SENDING,
                )
            if claim.row_id is None:
                if claim.status == "sent":
                    already += 1
                    count_delivery(target.channel, "already_sent")
                else:  # another attempt of this run is sending it right now
                    busy = RetryLater(
                        "being delivered by another attempt", retry_after=claim.free_in_s + 1
                    )
                    failures.append((target, busy))
                    count_delivery(target.channel, "in_progress")
                continue
            try:
                provider_id = await self._send(target, result, claim.idempotency_key)
            except Exception as exc:  # noqa: BLE001 - one destination's failure, any kind
                failure = exc if isinstance(exc, JobsError) else _unexpected(exc, target)
                failures.append((target, failure))
                count_delivery(target.channel, "failed")
                await self._record_failure(claim, failure)
                continue
            except BaseException as exc:
                # A timeout or cancellation mid-send: release the claim (in a task of
                # its own, so the cancellation cannot stop it) for the retry to take.
                count_delivery(target.channel, "interrupted")
                await asyncio.shield(self._record_failure(claim, exc))
                raise
            count_delivery(target.channel, "sent")  # the provider has it, whatever follows
            # In a task of its own: a timeout or cancellation arriving now ends this call
            # at once, but must not leave the row `sending`, or a retry would take it
            # over and send it again. The task finishes in the background (kept in
            # _RECORDING so it is not collected half-way).
            recording = asyncio.ensure_future(self._mark_sent(claim, provider_id, target))
            _RECORDING.add(recording)
            recording.add_done_callback(_RECORDING.discard)
            await asyncio.shield(recording)
            sent += 1
        if failures:
            raise _summed_up(failures)
        return DeliveryReport(sent, already)

    async def _mark_sent(
        self, claim: deliveries.Claim, provider_id: str | None, target: DeliveryTarget
    ) -> None:
        """Record the send, retrying a database error a few times: the provider has the
        message, and a row left `sending` would be sent again by a retry once stale."""
        for attempt in range(_MARK_SENT_TRIES):
            try:
                async with self._database.engine.begin() as connection:
                    await deliveries.mark_sent(connection, claim, provider_id=provider_id)
            except Exception as exc:  # noqa: BLE001 - logged; retried, then given up
                if attempt + 1 == _MARK_SENT_TRIES:
                    _log.error(
                        "delivery-unconfirmed",
                        channel=target.channel,
                        target=target.target,
                        error_type=type(exc).__name__,
                        error=str(exc)[:300],
                    )
                    return
                await asyncio.sleep(0.5 * 2**attempt)
            else:
                _log.info("delivery-sent", channel=target.channel, target=target.target)
                return

    async def _record_failure(self, claim: deliveries.Claim, exc: BaseException) -> None:
        error = {"type": type(exc).__name__, "message": (str(exc) or repr(exc))[:1000]}
        async with self._database.engine.begin() as connection:
            await deliveries.mark_failed(connection, claim, error=error)

    async def _send(self, target: DeliveryTarget, result: RunResult, key: str) -> str | None:
        spec = target.spec
        if isinstance(spec, str):
            return await self._send_teams(spec, result)
        if isinstance(spec, EmailTarget):
            await self._send_mail(spec, result, key)
            return None
        return await self._create_event(spec, result, key)

    async def _send_teams(self, alias: str, result: RunResult) -> str | None:
        channel = self._channels.teams.get(alias)
        if channel is None:
            msg = (
                f"no [channels.teams.{alias}] is configured (deliver_to.teams_channel): "
                "configure it, or change the deliver_to of the schedule or route that "
                "sends here"
            )
            raise ConfigurationError(msg)
        if channel.webhook_url is not None:
            await self._teams.post(channel.webhook_url.get_secret_value(), teams_card(result))
            return None
        # Off the event loop: rendering is CPU work (a few passes of up to 16 KB).
        html = await asyncio.to_thread(teams_html, result)
        return await self._graph().post_channel_message(
            team_id=channel.team_id or "",
            channel_id=channel.channel_id or "",  # TeamsChannel requires both without a URL
            html=html,
        )

    async def _send_mail(self, spec: EmailTarget, result: RunResult, key: str) -> None:
        from jobs_service.agents.graph import MailAttachment  # noqa: PLC0415 - workers only

        graph = self._graph()
        html = await asyncio.to_thread(mail_html, result)
        await graph.send_mail(
            to=spec.to,
            cc=spec.cc,
            subject=spec.subject or capped(result.title, MAX_TITLE_CHARS),
            html=html,
            attachments=[
                MailAttachment(item.name, item.content_type, item.content)
                for item in result.artifacts
            ],
            idempotency_key=key,
        )

    async def _create_event(self, spec: CalendarTarget, result: RunResult, key: str) -> str:
        start = spec.start or datetime.now(UTC) + timedelta(minutes=spec.offset_minutes)
        graph = self._graph()
        html = await asyncio.to_thread(mail_html, result)
        return await graph.create_event(
            subject=spec.subject or capped(result.title, MAX_TITLE_CHARS),
            html=html,
            start=start,
            end=start + timedelta(minutes=spec.duration_minutes),
            attendees=spec.attendees,
            idempotency_key=key,
        )


def _unexpected(exc: Exception, target: DeliveryTarget) -> JobsError:
    """An error no agent mapped (a malformed address, a bug): logged with its traceback
    and permanent, as sending again would meet it again."""
    _log.error("delivery-error", channel=target.channel, target=target.target, exc_info=exc)
    return PermanentError(f"{type(exc).__name__}: {str(exc)[:300]}")


def _summed_up(failures: list[tuple[DeliveryTarget, JobsError]]) -> JobsError:
    detail = "; ".join(f"{target.channel} {target.target}: {exc}" for target, exc in failures)
    message = f"delivery failed for {len(failures)} target(s): {detail}"
    retryable = [exc for _, exc in failures if isinstance(exc, RetryLater)]
    if retryable:
        waits = [exc.retry_after for exc in retryable if exc.retry_after is not None]
        return RetryLater(message, retry_after=max(waits) if waits else None)
    if all(isinstance(exc, ConfigurationError) for _, exc in failures):
        return ConfigurationError(message)
    return PermanentError(message)
