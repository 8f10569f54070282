"""The task catalog lists every registered task with what the code declares."""

from __future__ import annotations

import re

import pytest

from jobs_service.broker import broker
from jobs_service.reference.tasks import render_task_catalog, task_anchor
from jobs_service.tasks.registry import TaskInfo, find_task, list_tasks

TASKS = list_tasks(broker)
CATALOG = render_task_catalog(TASKS)


def _section(name: str) -> str:
    """The catalog's section of one task: from its heading to the next heading."""
    start = CATALOG.index(f"### `{name}` {{#{task_anchor(name)}}}")
    following = re.compile(r"^##", re.MULTILINE).search(CATALOG, start + 1)
    return CATALOG[start : following.start() if following else len(CATALOG)]


@pytest.mark.parametrize("info", TASKS, ids=lambda info: info.name)
def test_every_registered_task_has_a_section_and_an_overview_row(info: TaskInfo) -> None:
    """A task the registry knows is in the overview (linked) and has its own section."""
    assert f"| [`{info.name}`](#{task_anchor(info.name)}) |" in CATALOG
    section = _section(info.name)
    assert f"`{info.category}`" in section
    assert info.summary_line.split("``")[0] in section


def test_the_catalog_includes_the_deployments_own_modules() -> None:
    """Tasks of JOBS_TASK_MODULES are listed beside the built-ins."""
    assert "### `count_items`" in CATALOG
    assert "## Category `testing`" in CATALOG
    assert "### `cleanup_old_runs`" in CATALOG


def test_schedules_show_cron_zone_and_condition() -> None:
    """Label schedules show their cron and zone, and a `needs` label its condition."""
    assert "`17 3 * * *` (UTC)" in _section("cleanup_old_runs")
    assert "only when `[domain_api]` is configured" in _section("sync_accounts")
    assert "| — |" in _section("count_items")


def test_timeout_and_retries_come_from_the_labels() -> None:
    """`timeout` and `retry_on_error`/`max_retries` are shown as declared."""
    assert "| 30 s | none |" in _section("sleep_for")
    assert "| none | up to 2 (backoff) |" in _section("fail_until_attempt")


def test_arguments_are_listed_with_type_and_default() -> None:
    """Each keyword argument a caller may pass; dependencies are not arguments."""
    section = _section("count_items")
    assert "| `items` | array of string | required |" in section
    assert "| `fail_on` | string | `null` |" in section
    assert "history" not in _section("check_system_health").split("**Arguments**")[1]


def test_a_task_without_arguments_says_how_to_submit_it() -> None:
    """No table of nothing: the empty kwargs object to send."""
    assert 'No arguments: submit `{"kwargs": {}}`.' in _section("return_garbage")


def test_nested_argument_types_get_their_full_schema() -> None:
    """A model-typed argument (deliver_to) comes with the JSON Schema of its shape."""
    section = _section(find_task(broker, "run_agent_task").name)
    assert '??? note "JSON Schema of the arguments"' in section
    assert '"CalendarTarget"' in section


def test_docstrings_are_converted_to_markdown() -> None:
    """reST literals in docstrings become code spans."""
    section = _section("count_items")
    assert "``fail_on``" not in section
    assert "`fail_on`" in section


def test_tasks_are_grouped_by_category_in_order() -> None:
    """Categories in alphabetical order, each once."""
    categories = re.findall(r"^## Category `([^`]+)`", CATALOG, re.MULTILINE)
    assert categories == sorted(set(categories))
    assert set(categories) == {info.category for info in TASKS}
