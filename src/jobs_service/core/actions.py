"""Names of domain actions: what the domain API is asked to do
(``POST {base_url}/jobs/actions/<name>``).

One pattern for every place a name enters (a route's ``action`` in the configuration, a
``run_agent_task``'s ``agent`` at submit time, the agent at call time), so a bad name is
refused where it is written, not by the run that uses it after it was accepted.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

__all__ = ["ACTION_PATTERN", "ActionName"]

#: Lowercase words (letters, digits, ``-``, ``_``) separated by ``/``.
ACTION_PATTERN = r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$"

ActionName = Annotated[str, StringConstraints(pattern=ACTION_PATTERN, max_length=200)]
