"""What a finished attempt amounts to, decided once from TaskIQ's result.

Both the log line and the run record derive from this, so they can never disagree
about whether a run succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from jobs_service.core.summary import InvalidSummaryError, Summary, validate_summary
from jobs_service.middlewares.cancellation import RunCancelled

if TYPE_CHECKING:
    from taskiq import TaskiqResult

    from jobs_service.core.run_context import RunContext

__all__ = ["Outcome", "outcome_of"]

_MAX_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class Outcome:
    """Status, summary and error of one attempt."""

    status: str
    summary: Summary | None
    error: dict[str, str] | None

    @property
    def succeeded(self) -> bool:
        """True when the attempt succeeded."""
        return self.status == "succeeded"


def _error(exc: BaseException | str) -> dict[str, str]:
    if isinstance(exc, str):
        return {"type": "Error", "message": exc[:_MAX_MESSAGE]}
    message = str(exc) or repr(exc)
    return {"type": type(exc).__name__, "message": message[:_MAX_MESSAGE]}


def outcome_of(result: TaskiqResult[Any], run: RunContext | None = None) -> Outcome:
    """Classify a TaskIQ result; a success that breaks the summary contract is a failure.

    A failure is ``retrying`` when the retry middleware scheduled another attempt and
    ``dead`` when it was the last attempt a retried task had; an attempt stopped by an
    operator's cancel is ``cancelled``. Decided once per attempt: the logging, recording
    and delivery middlewares all ask (after the retry middleware decided).
    """
    if run is not None:
        cached = run.outcome
        if cached is not None and cached[0] is result:
            return cast("Outcome", cached[1])
        outcome = _classify(result, run)
        run.outcome = (result, outcome)
        return outcome
    return _classify(result, None)


def _classify(result: TaskiqResult[Any], run: RunContext | None) -> Outcome:
    if result.is_err:
        error = result.error
        if isinstance(error, RunCancelled):
            return Outcome("cancelled", None, {"type": "Cancelled", "message": str(error)})
        status = "failed"
        if run is not None and run.retry_in_s is not None:
            status = "retrying"
        elif run is not None and run.exhausted:
            status = "dead"
        return Outcome(status, None, _error(error if error is not None else "unknown error"))
    try:
        summary = validate_summary(result.return_value)
    except InvalidSummaryError as exc:
        return Outcome("failed", None, _error(exc))
    return Outcome("succeeded", summary, None)
