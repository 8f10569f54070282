"""Jobs Service: the one place where an application's background work runs.

The package is layered (see ``docs/architecture.md``): ``core`` holds settings, logging
and domain types and imports nothing of ours; ``infrastructure`` and ``agents`` adapt the
outside world; ``middlewares`` plug run bookkeeping into TaskIQ; ``tasks`` are the
``verb_noun`` jobs; ``gateway`` is the HTTP face and ``cli`` the operator's.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
