"""A fake domain application: ``POST /jobs/actions/{action}`` as the docs specify it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from tests.support.fakes.tokens import FakeTokenEndpoint


@dataclass(frozen=True)
class ActionCall:
    """One request the domain received."""

    action: str
    idempotency_key: str | None
    body: dict[str, Any]


@dataclass
class FakeDomainApi:
    """Runs actions once per Idempotency-Key and answers repeats from its record."""

    tokens: FakeTokenEndpoint | None = None
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[ActionCall] = field(default_factory=list)
    executed: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: dict[str, list[tuple[int, dict[str, str], str | None]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self,
        action: str,
        status: int,
        count: int = 1,
        retry_after: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls of ``action`` with ``status`` (and a problem
        ``detail``, "injected <status>" unless given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._failures.setdefault(action, []).extend([(status, headers, detail)] * count)

    def calls_of(self, action: str) -> list[ActionCall]:
        """The requests for one action, in arrival order."""
        with self._lock:
            return [call for call in self.calls if call.action == action]

    def _answer(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.answers.get(action)
        if answer is not None:
            return answer
        payload = body.get("payload") or {}
        items = payload.get("items", 1) if isinstance(payload, dict) else 1
        return {
            "summary": {"processed": items, "errors": 0},
            "content": f"**{action}** done for run `{body.get('run_id')}`",
        }

    async def _action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if self.tokens is not None and not self.tokens.valid(request.headers.get("authorization")):
            return JSONResponse({"title": "Unauthorized"}, status_code=401)
        try:
            # The standard library keeps every digit of an integer, as a domain
            # application's parser should (orjson reads one beyond 64 bits as a float).
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"title": "Bad Request", "detail": "not JSON"}, status_code=400)
        if not isinstance(body, dict) or "run_id" not in body or "payload" not in body:
            return JSONResponse(
                {"title": "Bad Request", "detail": "need run_id and payload"}, status_code=400
            )
        key = request.headers.get("idempotency-key")
        with self._lock:
            self.calls.append(ActionCall(action, key, body))
            queue = self._failures.get(action)
            failure = queue.pop(0) if queue else None
        if failure is not None:
            status, headers, detail = failure
            return JSONResponse(
                {"title": "Unavailable", "detail": detail or f"injected {status}"},
                status_code=status,
                headers=headers,
            )
        if action.startswith("missing/"):
            return JSONResponse({"title": "Not Found", "detail": "no such action"}, 404)
        with self._lock:
            stored = self.executed.get(key) if key else None
            if stored is None:
                stored = self._answer(action, body)
                if key:
                    self.executed[key] = stored
        return JSONResponse(stored)

    @property
    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[Route("/jobs/actions/{action:path}", self._action, methods=["POST"])]
        )
