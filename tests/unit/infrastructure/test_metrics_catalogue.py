"""The Grafana dashboard and the metrics page match the metric families that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import jobs_service.agents.delivery_metrics
import jobs_service.broker
import jobs_service.client._metrics
import jobs_service.scheduler.metrics
import jobs_service.webhooks.metrics  # noqa: F401 - every module that defines a family
from jobs_service.infrastructure.queue_metrics import QueueCollector, QueueSnapshot

DOCS = Path(__file__).parents[3] / "docs"
DASHBOARD = json.loads((DOCS / "grafana" / "jobs-service.json").read_text())
METRICS_PAGE = (DOCS / "metrics.md").read_text()
_SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
_NAME = re.compile(r"\bjobs_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(jobs_[a-z0-9_]+)\{([^}]*)\}")
_BY = re.compile(r"\bby \(([^)]*)\)")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"')


def _families() -> dict[str, tuple[str, set[str]]]:
    """Family name → (type, label names), from the live registry and the queue collector."""
    found: dict[str, tuple[str, set[str]]] = {}
    sample_snapshot = QueueSnapshot("q", up=True, depth={"ready": 0}, oldest_age_s={"ready": 0})
    collected = [*REGISTRY.collect(), *QueueCollector(sample_snapshot).collect()]
    for family in collected:
        if family.name.startswith("jobs_"):
            labels = {name for sample in family.samples for name in sample.labels}
            collector = REGISTRY._names_to_collectors.get(family.name)
            labels |= set(getattr(collector, "_labelnames", ()))
            found[family.name] = (family.type, labels - {"le"})
    return found


FAMILIES = _families()
SERIES = {
    family + suffix: family for family, (kind, _) in FAMILIES.items() for suffix in _SERIES[kind]
}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_panels(panel.get("panels", [])))
    return flat


PANELS = [panel for panel in _panels(DASHBOARD["panels"]) if panel.get("targets")]
EXPRESSIONS = [target["expr"] for panel in PANELS for target in panel["targets"]]


def test_the_catalogue_knows_every_family() -> None:
    """Thirteen families: a new one must be added to the dashboard and the docs too."""
    assert set(FAMILIES) == {
        "jobs_runs",
        "jobs_run_duration_seconds",
        "jobs_run_retries",
        "jobs_dead_runs",
        "jobs_deliveries",
        "jobs_webhook_requests",
        "jobs_schedule_fires",
        "jobs_schedule_skips",
        "jobs_schedule_misses",
        "jobs_queue_up",
        "jobs_queue_depth",
        "jobs_queue_oldest_age_seconds",
        "jobs_sends_unconfirmed",
    }


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_every_dashboard_query_names_series_that_exist(expr: str) -> None:
    """A query on a misspelt or suffix-less series would chart nothing, silently."""
    unknown = [name for name in _NAME.findall(expr) if name not in SERIES]
    assert not unknown, f"{unknown} in {expr}"
    assert expr.count("(") == expr.count(")")
    assert expr.count("{") == expr.count("}")


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_every_dashboard_query_uses_labels_its_families_have(expr: str) -> None:
    """Grouping or filtering on a label the family lacks charts one flat line, or none."""
    families = {SERIES[name] for name in _NAME.findall(expr)}
    labels = set().union(*(FAMILIES[family][1] for family in families)) | {"le"}
    for series, matchers in _SELECTOR.findall(expr):
        used = set(_MATCHER.findall(matchers))
        assert used, f"unreadable matchers {matchers!r}"
        assert used <= FAMILIES[SERIES[series]][1], f"{used} on {series}"
    for grouping in _BY.findall(expr):
        used = {name.strip() for name in grouping.split(",")}
        assert used <= labels, f"by ({grouping}) in {expr}"


def test_every_family_has_a_panel() -> None:
    """Nothing the service exposes is left off the dashboard."""
    charted = {SERIES[name] for expr in EXPRESSIONS for name in _NAME.findall(expr)}
    assert charted == set(FAMILIES)


def test_the_dashboard_is_importable() -> None:
    """Unique panel ids, a Prometheus data source chosen at import, variables that
    query existing series."""
    ids = [panel["id"] for panel in _panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in PANELS)
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("task", "queue"):
        series = _NAME.findall(variables[name]["definition"])
        assert series
        assert all(s in SERIES for s in series)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_metrics_page_documents_every_family_and_label(family: str) -> None:
    """docs/metrics.md names each family as scraped, with its type and labels."""
    kind, labels = FAMILIES[family]
    exposed = family + ("_total" if kind == "counter" else "")
    match = re.search(rf"^### `{exposed}`\n(.*?)(?=^### |\Z)", METRICS_PAGE, re.M | re.S)
    assert match, f"no section for {exposed}"
    section = match.group(1)
    assert kind in section
    for label in labels:
        assert f"`{label}`" in section, f"label {label} of {exposed}"
