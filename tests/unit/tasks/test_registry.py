"""Every registered task honours the task contract (DESIGN §3)."""

from __future__ import annotations

import pytest

from jobs_service.broker import broker
from jobs_service.core.summary import Summary
from jobs_service.tasks.registry import (
    TASK_NAME_PATTERN,
    InvalidKwargsError,
    TaskInfo,
    UnknownTaskError,
    find_task,
    list_tasks,
)

TASKS = list_tasks(broker)


def test_the_built_in_and_extra_modules_are_registered() -> None:
    """Built-ins plus the JOBS_TASK_MODULES module the tests configure."""
    names = {info.name for info in TASKS}
    assert {"cleanup_old_runs", "check_system_health"} <= names
    assert {"count_items", "fail_on_purpose"} <= names


@pytest.mark.parametrize("info", TASKS, ids=lambda info: info.name)
def test_task_contract(info: TaskInfo) -> None:
    """verb_noun, explicitly named, returns a count Summary, documented."""
    assert TASK_NAME_PATTERN.fullmatch(info.name), f"{info.name} is not verb_noun"
    assert ":" not in info.name, "TaskIQ's default module:function name means no task_name"
    assert info.returns_summary, f"{info.name} must be annotated '-> Summary'"
    assert info.summary_line, f"{info.name} needs a docstring"


@pytest.mark.parametrize(
    "name", ["checkhealth", "Check_health", "check-health", "check_", "_check", "check__health"]
)
def test_the_name_rule_rejects(name: str) -> None:
    """The verb_noun pattern is strict."""
    assert not TASK_NAME_PATTERN.fullmatch(name)


def test_dependencies_are_not_arguments() -> None:
    """TaskiqDepends parameters are injected, never accepted from callers."""
    info = find_task(broker, "check_system_health")
    assert set(info.kwargs_model.model_fields) == {"stuck_after_s"}
    with pytest.raises(InvalidKwargsError, match="probe"):
        info.validate_kwargs({"probe": "x"})


def test_kwargs_are_validated_and_normalised() -> None:
    """Types are checked; numeric strings become ints; unknown keys are refused."""
    info = find_task(broker, "cleanup_old_runs")
    assert info.validate_kwargs({"retention_days": "7"}) == {"retention_days": 7}
    assert info.validate_kwargs({}) == {}
    with pytest.raises(InvalidKwargsError) as caught:
        info.validate_kwargs({"retention_days": "soon"})
    assert caught.value.errors[0]["loc"] == ["retention_days"]
    with pytest.raises(InvalidKwargsError, match="Extra inputs"):
        info.validate_kwargs({"retention": 7})


@pytest.mark.parametrize(
    ("items", "loc", "message"),
    [
        (["fine", "bad\x00"], ["items", 1], "NUL"),
        (["fine", {"nested": [1, float("nan")]}], ["items", 1, "nested", 1], "NaN"),
        ([{"key\x00": 1}], ["items", 0, "key\x00"], "NUL"),
        ([2**63], ["items", 0], "64-bit"),
        ([1.0, -1e20], ["items", 1], "2^63"),
        (["\ud800"], ["items", 0], "surrogate"),
    ],
)
def test_values_the_wire_or_database_would_mangle_are_refused_where_they_are(
    items: list[object], loc: list[object], message: str
) -> None:
    """The error points at the value, however deep (a dictionary key included)."""
    with pytest.raises(InvalidKwargsError) as caught:
        find_task(broker, "count_items").validate_kwargs({"items": items})
    [error] = caught.value.errors
    assert error["loc"] == loc
    assert message in error["msg"]
    assert error["type"] == "unportable_value"


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        ("sleep_for", {"seconds": "NaN"}, "finite"),
        ("sleep_for", {"seconds": "-Infinity"}, "finite"),
        ("sleep_for", {"seconds": "1e999"}, "finite"),
        ("process_webhook_event", {"event_id": "9223372036854775808"}, "64-bit"),
    ],
)
def test_values_that_become_unportable_once_converted_are_refused(
    task: str, kwargs: dict[str, object], message: str
) -> None:
    """A string the field converts (to a float that is not finite, to an int beyond 64
    bits) used to pass: the run was stored with null or failed in the database."""
    with pytest.raises(InvalidKwargsError) as caught:
        find_task(broker, task).validate_kwargs(kwargs)
    [error] = caught.value.errors
    assert message in error["msg"]
    assert error["loc"] == [next(iter(kwargs))]


@pytest.mark.parametrize("depth", [60, 70, 256, 5000])
def test_arguments_nested_too_deep_are_a_clear_refusal_not_a_crash(depth: int) -> None:
    """Pydantic's serializer raised a bare ValueError at 256 levels (a 500 at the API);
    Python's recursion gives out near 1,000."""
    payload: object = 1
    for _ in range(depth):
        payload = [payload]
    info = find_task(broker, "run_agent_task")
    if depth == 60:
        assert info.validate_kwargs({"agent": "report", "payload": {"x": payload}})
        return
    with pytest.raises(InvalidKwargsError, match="nested more than 64 levels"):
        info.validate_kwargs({"agent": "report", "payload": {"x": payload}})


def test_required_kwargs() -> None:
    """A parameter without default is required."""
    with pytest.raises(InvalidKwargsError, match="items"):
        find_task(broker, "count_items").validate_kwargs({})


def test_labels_given_as_a_dict_are_flattened() -> None:
    """``labels={...}`` (DESIGN §3's spelling) reads like keyword labels."""
    task = broker.register_task(
        _labelled,
        task_name="sync_labelled",
        labels={"schedule": ["0 9 * * 1", "0 17 * * 5"], "category": "demo"},
    )
    try:
        info = TaskInfo(task)
        assert info.schedules == ["0 9 * * 1", "0 17 * * 5"]
        assert info.category == "demo"
        assert "labels" not in info.wire_labels
    finally:
        broker.local_task_registry.pop("sync_labelled", None)


async def _labelled() -> Summary:
    """A demo task."""
    return {"errors": 0}


def test_unknown_task() -> None:
    """Looking up a missing task raises UnknownTaskError."""
    with pytest.raises(UnknownTaskError, match="no_such_task"):
        find_task(broker, "no_such_task")


@pytest.mark.parametrize("agent", ["Sales Report", "billing.invoice", "", "/kpi", "a" * 201])
def test_an_agent_name_the_domain_api_would_refuse_is_refused_at_submit(agent: str) -> None:
    """It used to pass validation and fail the run when it called the domain."""
    with pytest.raises(InvalidKwargsError) as caught:
        find_task(broker, "run_agent_task").validate_kwargs({"agent": agent})
    assert caught.value.errors[0]["loc"] == ["agent"]
    assert find_task(broker, "run_agent_task").validate_kwargs({"agent": "weekly-kpis/sales"})
