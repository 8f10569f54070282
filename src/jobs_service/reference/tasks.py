"""The task catalog, rendered from the task registry.

It reads :func:`~jobs_service.tasks.registry.list_tasks` — the same view the gateway,
``jobsctl tasks`` and the scheduler use — so a deployment's catalog lists its own task
modules (``JOBS_TASK_MODULES``) beside the built-ins, with the schedules, timeouts and
retries the code declares rather than what someone remembered to write down.
"""

from __future__ import annotations

import json
from itertools import groupby
from typing import TYPE_CHECKING, Any

from jobs_service.reference.markdown import code, docstring, paragraph, table
from jobs_service.reference.schemas import default_text, schema_type

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs_service.tasks.registry import TaskInfo

__all__ = ["render_task_catalog", "task_anchor"]


def task_anchor(name: str) -> str:
    """The catalog's anchor of a task: ``#task-check_system_health``."""
    return f"task-{name}"


def _schedule(info: TaskInfo) -> str:
    if not info.schedules:
        return "—"
    crons = ", ".join(code(cron) for cron in info.schedules)
    text = f"{crons} ({info.timezone})"
    needs = info.labels.get("needs")
    if needs:
        text += f", only when {code(f'[{needs}]')} is configured"
    return text


def _retries(info: TaskInfo) -> str:
    if not info.retry_on_error:
        return "none"
    return f"up to {info.max_retries} (backoff)"


def _timeout(info: TaskInfo) -> str:
    return "none" if info.timeout_s is None else f"{info.timeout_s:g} s"


def _arguments(schema: dict[str, Any]) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return 'No arguments: submit `{"kwargs": {}}`.'
    required = set(schema.get("required", []))
    rows = [
        [
            code(name),
            paragraph(schema_type(node)),
            default_text(node, required=name in required),
            paragraph(node.get("description", "")),
        ]
        for name, node in properties.items()
    ]
    return table(["argument", "type", "default", "description"], rows, optional={"description"})


def _json_schema_block(schema: dict[str, Any]) -> str:
    body = json.dumps(schema, indent=2)
    indented = "\n".join("    " + line for line in body.splitlines())
    return f'??? note "JSON Schema of the arguments"\n\n    ```json\n{indented}\n    ```'


def _task_section(info: TaskInfo) -> str:
    facts = table(
        ["category", "schedule", "timeout", "retries", "module"],
        [
            [
                code(info.category),
                _schedule(info),
                _timeout(info),
                _retries(info),
                code(info.task.original_func.__module__),
            ]
        ],
    )
    schema = info.argument_schema()
    parts = [
        f"### {code(info.name)} {{#{task_anchor(info.name)}}}",
        facts,
        docstring(info.description) or "*(no docstring)*",
        "**Arguments**",
        _arguments(schema),
    ]
    if "$defs" in schema:
        parts.append(_json_schema_block(schema))
    return "\n\n".join(parts)


def render_task_catalog(tasks: Sequence[TaskInfo]) -> str:
    """An overview table of every task, then one section per task by category."""
    ordered = sorted(tasks, key=lambda info: (info.category, info.name))
    overview = table(
        ["task", "category", "schedule", "what it does"],
        [
            [
                f"[{code(info.name)}](#{task_anchor(info.name)})",
                code(info.category),
                _schedule(info),
                paragraph(info.summary_line),
            ]
            for info in ordered
        ],
    )
    parts = [overview]
    for category, members in groupby(ordered, key=lambda info: info.category):
        parts.append(f"## Category {code(category)}")
        parts.extend(_task_section(info) for info in members)
    return "\n\n".join(parts) + "\n"
