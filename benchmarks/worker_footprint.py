"""A worker's start-up cost with and without Microsoft Graph.

Each measurement runs in a fresh interpreter: import what ``taskiq worker
jobs_service.broker:broker`` imports (settings, broker, every task module), then
optionally make a first Graph call (``sendMail`` against a fake Graph on 127.0.0.1) and
a second one. Reports import time, first/second call latency and peak RSS.

    uv run python -m benchmarks.worker_footprint --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.processes import ROOT

__all__ = ["measure"]

_PROBE = r"""
import asyncio, json, resource, sys, time
started = time.perf_counter()
import jobs_service.broker  # what a worker imports: settings, broker, task modules
imported = time.perf_counter() - started
result = {"import_s": imported, "msgraph_loaded": "msgraph" in sys.modules}
if sys.argv[1] == "graph":
    from jobs_service.agents.graph import GraphAgent
    from jobs_service.core.settings import GraphSettings
    from tests.support.fakes.graph import FakeGraph
    from tests.support.fakes.server import serve
    from tests.support.fakes.tokens import FakeTokenEndpoint

    async def mail(agent):
        await agent.send_mail(to=["ops@example.com"], subject="s", html="<p>x</p>")

    tokens = FakeTokenEndpoint()
    with serve(tokens.app) as token_base, serve(FakeGraph(valid_token=tokens.valid).app) as graph:
        settings = GraphSettings(token_url=token_base + "/token", client_id=tokens.client_id,
                                 client_secret=tokens.client_secret, base_url=graph + "/v1.0",
                                 sender="jobs@example.com")
        async def calls():
            agent = GraphAgent(settings)
            t0 = time.perf_counter(); await mail(agent); first = time.perf_counter() - t0
            t0 = time.perf_counter(); await mail(agent); second = time.perf_counter() - t0
            await agent.aclose()
            return first, second
        result["first_call_s"], result["second_call_s"] = asyncio.run(calls())
    result["msgraph_loaded"] = "msgraph" in sys.modules
result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def _measure(mode: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(*, repeat: int = 5) -> dict[str, dict[str, Any]]:
    """Both modes ``repeat`` times: medians, and whether msgraph was loaded."""
    report: dict[str, dict[str, Any]] = {}
    for mode in ("plain", "graph"):
        samples = [_measure(mode) for _ in range(repeat)]
        keys = [k for k in samples[0] if k != "msgraph_loaded"]
        report[mode] = {k: round(statistics.median(s[k] for s in samples), 4) for k in keys}
        report[mode]["msgraph_loaded"] = any(s["msgraph_loaded"] for s in samples)
    return report


def main() -> None:
    """Measure both modes ``--repeat`` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(repeat=args.repeat), indent=2))


if __name__ == "__main__":
    main()
