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
    from collections.abc import Mapping

__all__ = ["TeamsWorkflows", "adaptive_card"]


def adaptive_card(title: str, markdown: str | None, summary: Mapping[str, int]) -> dict[str, Any]:
    """The Workflows message: a title, the content (cards render markdown) and the counts."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    if markdown:
        body.append({"type": "TextBlock", "text": markdown, "wrap": True})
    if summary:
        facts = [{"title": key, "value": str(value)} for key, value in summary.items()]
        body.append({"type": "FactSet", "facts": facts})
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

    async def post(
        self, webhook_url: str, *, title: str, markdown: str | None, summary: Mapping[str, int]
    ) -> None:
        """Send one card; errors are RetryLater (5xx, 429, network) or PermanentError."""
        provider = "Teams Workflows webhook"
        try:
            response = await self._http.post(
                webhook_url, json=adaptive_card(title, markdown, summary)
            )
        except httpx.HTTPError as exc:
            # The URL carries a signature: name the kind of failure, never the URL.
            raise unreachable(exc, provider=provider) from None
        check_response(response, provider=provider)
