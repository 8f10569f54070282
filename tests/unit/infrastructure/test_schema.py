"""How a database's Alembic revision compares with this release's head."""

from __future__ import annotations

from jobs_service.core.errors import SchemaError
from jobs_service.infrastructure.migrate import head_revision, known_revisions
from jobs_service.infrastructure.schema import SchemaState


def test_each_revision_is_missing_behind_current_or_newer() -> None:
    """No revision is missing, an earlier one of ours behind, ours current, and one this
    release does not know a newer release's: only the first two refuse."""
    head = head_revision()
    earlier = min(known_revisions())
    states = {
        "missing": SchemaState(None, head, known=True),
        "behind": SchemaState(earlier, head, known=True),
        "current": SchemaState(head, head, known=True),
        "newer": SchemaState("9999_next", head, known=False),
    }
    assert {name: state.status for name, state in states.items()} == {name: name for name in states}
    assert isinstance(states["missing"].error, SchemaError)
    assert f"older revision ({earlier}) than this release ({head})" in str(states["behind"].error)
    assert states["current"].error is None
    assert states["newer"].error is None
    assert states["newer"].describe() == f"revision 9999_next, newer than this release's {head}"
