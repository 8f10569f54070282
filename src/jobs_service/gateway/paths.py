"""Request paths as the gateway's routes see them, under any path prefix.

An ASGI server that serves the gateway under a prefix (uvicorn's ``--root-path``, or
a mount in another ASGI app) puts the prefix in ``scope["root_path"]`` and keeps it in
``scope["path"]``: ``/jobs/v1/runs`` served under ``/jobs``. Starlette's router matches
routes against the path without the prefix; every other rule that goes by the path (body
limits, the audit, security headers, the webhook fast path) uses :func:`route_path` to
match the same one. A path the gateway sends back to the client (``Location``) carries
the prefix: :func:`public_path`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

__all__ = ["public_path", "route_path"]


def route_path(scope: Scope) -> str:
    """``scope["path"]`` without ``scope["root_path"]``, exactly as Starlette's router
    strips it (``/v1/runs`` for ``/jobs/v1/runs`` under ``/jobs``); a path outside the
    prefix is left as it is."""
    path = str(scope["path"])
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def public_path(scope: Scope, path: str) -> str:
    """``path`` (``/v1/runs/…``) as the client reaches it: under the prefix, if any."""
    return f"{scope.get('root_path') or ''}{path}"
