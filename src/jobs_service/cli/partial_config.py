"""``jobsctl check`` on a configuration that does not load: the rules on the rest of it.

A validation error stops the settings from loading, and with them every rule of
:func:`~jobs_service.cli.config_check.check_settings`: an unsigned source in production
went unreported until a bad source name elsewhere was fixed. Here the keys that fail are
taken out of what was given and the rest is loaded, with defaults in their place, for
the rules to run on.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from jobs_service.cli.config_check import Finding, check_settings, validation_findings
from jobs_service.core.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["invalid_settings_findings"]


def invalid_settings_findings(
    error: ValidationError, given: Mapping[str, Any] | None
) -> list[Finding]:
    """A configuration that does not load: every validation error, then what the rules
    find in the rest of it, so one run of ``check`` lists every problem.

    ``given`` is what was validated (:meth:`Settings.unvalidated`); the keys that fail are
    taken out of it and the rest loaded, with defaults in their place. A rule's finding
    at or under a key that failed is left out: it would be about the default, not what
    the author wrote. Without ``given``, or when the rest cannot be loaded (a rule across
    the whole configuration failed), only the validation errors.
    """
    invalid = validation_findings(error)
    rest = _loadable_rest(given) if given is not None else None
    if rest is None:
        return invalid
    failed = [finding.path for finding in invalid]
    rules = [
        finding
        for finding in check_settings(rest, None)
        if not any(_related(finding.path, path) for path in failed)
    ]
    return sorted([*invalid, *rules], key=lambda finding: finding.level != "problem")


#: Each pass takes out what failed; taking out a key can make its table fail in turn
#: (a source without its only secret), so a few passes, never a loop.
_PASSES = 4
_TAKEN_OUT = object()


def _loadable_rest(given: Mapping[str, Any]) -> Settings | None:
    data: Any = dict(given)
    for _ in range(_PASSES):
        try:
            return Settings.from_given(data)
        except ValidationError as exc:
            data = copy.deepcopy(data)
            if not all(_take_out(data, detail["loc"]) for detail in exc.errors()):
                return None
            data = _without_taken_out(data)
    return None


def _take_out(data: Any, loc: Sequence[str | int]) -> bool:
    """Mark the deepest entry of ``data`` on the error's location (a table whose key is
    missing, the item whose union member failed), or say it cannot be done."""
    parent: Any = None
    key: str | int = ""
    node = data
    for item in loc:
        found = (isinstance(node, dict) and item in node) or (
            isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        )
        if not found:
            break
        parent, key, node = node, item, node[item]
    if parent is None:
        return False
    parent[key] = _TAKEN_OUT
    return True


def _without_taken_out(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_taken_out(v) for k, v in node.items() if v is not _TAKEN_OUT}
    if isinstance(node, list):
        return [_without_taken_out(v) for v in node if v is not _TAKEN_OUT]
    return node


def _related(path: str, failed: str) -> bool:
    """``path`` is ``failed``, inside it, or the table around it."""
    return path == failed or path.startswith(f"{failed}.") or failed.startswith(f"{path}.")
