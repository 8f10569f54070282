"""Teams Workflows: post a result card to a channel through its webhook URL.

Microsoft retired Office 365 connectors; a channel now takes incoming posts through a
Workflows flow ("Post to a channel when a webhook request is received"), which expects
a message with an Adaptive Card attachment and answers 202.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from jobs_service.infrastructure.http import check_response, unreachable

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["TeamsWorkflows", "adaptive_card"]


def adaptive_card(
    title: str,
    markdown: str | None,
    facts: Sequence[tuple[str, str]],
    note: str | None = None,
) -> dict[str, Any]:
    """The Workflows message: a title, the content (cards render markdown), the counts
    as facts and a closing note (counts left out)."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    if markdown:
        body.append({"type": "TextBlock", "text": markdown, "wrap": True})
    if facts:
        body.append(
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts]}
        )
    if note:
        body.append({"type": "TextBlock", "text": note, "isSubtle": True, "wrap": True})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                },
            }
        ],
    }


class TeamsWorkflows:
    """Posts to Workflows webhook URLs over a shared HTTP client."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def post(self, webhook_url: str, message: bytes) -> None:
        """Send one message (an encoded :func:`adaptive_card`, sent as measured); errors
        are RetryLater (5xx, 429, network) or PermanentError."""
        provider = "Teams Workflows webhook"
        try:
            response = await self._http.post(
                webhook_url, content=message, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            # The URL carries a signature: name the kind of failure, never the URL.
            raise unreachable(exc, provider=provider) from None
        check_response(response, provider=provider)
