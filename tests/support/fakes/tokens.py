"""A fake OAuth2 token endpoint (client-credentials and refresh-token grants)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class FakeTokenEndpoint:
    """Issues opaque tokens to one client; remembers which are valid and until when."""

    client_id: str = "jobs-client"
    client_secret: str = "jobs-secret"
    expires_in: int = 3600
    refresh_token: str = "refresh-1"
    delay_s: float = 0.0
    requests: list[dict[str, str]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    _expiry: dict[str, float] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def valid(self, authorization: str | None) -> bool:
        """True for ``Bearer <token>`` with a token this endpoint issued and not expired."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            expiry = self._expiry.get(authorization.removeprefix("Bearer "))
        return expiry is not None and time.monotonic() < expiry

    def grants(self, grant_type: str) -> int:
        """How many token requests of ``grant_type`` arrived."""
        with self._lock:
            return sum(1 for request in self.requests if request.get("grant_type") == grant_type)

    def revoke_all(self) -> None:
        """Every issued token stops working (as after a key rotation)."""
        with self._lock:
            self._expiry.clear()

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        with self._lock:
            self.requests.append({k: v for k, v in form.items() if "secret" not in k})
            failure = self.failures.pop(0) if self.failures else None
        if self.delay_s:
            await anyio.sleep(self.delay_s)  # let concurrent callers pile up behind it
        if failure is not None:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=failure)
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                status_code=401,
            )
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("refresh_token") != self.refresh_token:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
        elif grant != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = f"{'user' if grant == 'refresh_token' else 'app'}-token-{next(self._counter)}"
        with self._lock:
            self._expiry[token] = time.monotonic() + self.expires_in
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if grant == "refresh_token":
            body["refresh_token"] = self.refresh_token
        return JSONResponse(body)

    @property
    def app(self) -> Starlette:
        """The ASGI app: ``POST /token``."""
        return Starlette(routes=[Route("/token", self._token, methods=["POST"])])
