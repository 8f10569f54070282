"""The agents that talk to the outside world, built once per process and closed with it.

Every agent is created on first use: a gateway never builds one, and a worker whose
jobs never mail does not import the Graph SDK (a heavy import) or open its connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from jobs_service.agents.delivery import ResultDelivery
from jobs_service.agents.domain_api import DomainApi
from jobs_service.agents.teams import TeamsWorkflows

if TYPE_CHECKING:
    from jobs_service.agents.graph import GraphAgent
    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.database import Database

__all__ = ["OutsideAgents"]


class OutsideAgents:
    """DomainApi, Graph, Teams Workflows and result delivery for one process."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self._database = database
        self._http: httpx.AsyncClient | None = None
        self._domain_api: DomainApi | None = None
        self._graph: GraphAgent | None = None
        self._delivery: ResultDelivery | None = None

    def _shared_http(self) -> httpx.AsyncClient:
        if self._http is None:
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
            self._http = httpx.AsyncClient(
                timeout=self._settings.domain_api.timeout_s, limits=limits
            )
        return self._http

    def domain_api(self) -> DomainApi:
        """The domain application's agent."""
        if self._domain_api is None:
            self._domain_api = DomainApi(self._settings.domain_api, self._shared_http())
        return self._domain_api

    def graph(self) -> GraphAgent:
        """The Microsoft Graph agent (the SDK is imported on its first call)."""
        if self._graph is None:
            from jobs_service.agents.graph import GraphAgent  # noqa: PLC0415 - workers only

            self._graph = GraphAgent(self._settings.graph)
        return self._graph

    def delivery(self) -> ResultDelivery:
        """Result delivery through the Teams and Graph agents."""
        if self._delivery is None:
            self._delivery = ResultDelivery(
                self._database,
                self._settings.channels,
                TeamsWorkflows(self._shared_http()),
                self.graph,
            )
        return self._delivery

    async def aclose(self) -> None:
        """Close every connection the agents opened."""
        if self._graph is not None:
            await self._graph.aclose()
        if self._http is not None:
            await self._http.aclose()
