"""Webhook ingestion: requests/s and latency of POST /webhooks/<source>, against a bare
FastAPI endpoint that only parses the JSON (same uvicorn settings, same client).

Standard Webhooks signatures, 1 KiB bodies, 64 concurrent connections; every event is
committed to PostgreSQL and enqueued on Redis before its 202, and the rows are counted
afterwards. The load comes from ``wrk`` (Debian package ``wrk``) when installed, else
from an httpx client (which then limits the figures). Usage:
``uv run python -m benchmarks.webhook_ingestion --requests 30000 --seconds 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from benchmarks.services import REDIS_URL, clean_redis, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]
KEY = b"benchmark-signing-key-0123456789"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def _signed(index: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "invoice.paid", "n": index, "pad": "x" * 960}).encode()
    msg_id, ts = f"msg-{index}-{uuid.uuid4().hex[:8]}", str(int(time.time()))
    mac = hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return body, {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def _load(url: str, requests: int, concurrency: int) -> dict[str, float]:
    bodies = [_signed(i) for i in range(requests)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/webhooks/billing", content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": requests / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "status_202": statuses.get(202, 0),
    }


_LUA = """
local requests = {}
local index = 0
for line in io.lines(os.getenv("WEBHOOK_REQUESTS")) do
  local id, ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
  requests[#requests + 1] = wrk.format("POST", "/webhooks/billing", {
    ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    ["content-type"] = "application/json"}, body)
end
local threads = 0
function setup(thread)
  thread:set("id", threads)  -- each thread sends its own share: no accidental duplicates
  threads = threads + 1
end
function init(args)
  index = id
end
request = function()
  index = index + 2
  return requests[index % #requests + 1]
end
"""


def _wrk(url: str, requests: int, concurrency: int, seconds: int) -> dict[str, float]:
    """Drive the server with wrk (C, so the load generator is not the bottleneck)."""
    directory = Path(tempfile.mkdtemp())
    lines = []
    for index in range(requests):
        body, headers = _signed(index)
        lines.append(
            "\t".join(
                [
                    headers["webhook-id"],
                    headers["webhook-timestamp"],
                    headers["webhook-signature"],
                    body.decode(),
                ]
            )
        )
    (directory / "requests.tsv").write_text("\n".join(lines) + "\n")
    (directory / "signed.lua").write_text(_LUA)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(directory / "signed.lua"),
            url,
        ],
        env={**os.environ, "WEBHOOK_REQUESTS": str(directory / "requests.tsv")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    numbers: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            numbers["requests_per_s"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            numbers[f"p{parts[0][:-1]}_ms"] = _milliseconds(parts[1])
        elif "requests in" in line:
            numbers["requests"] = float(parts[0])
    return numbers


def _milliseconds(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _serve(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = Path(tempfile.gettempdir()) / f"webhook-bench-{port}.log"
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=0.5)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


async def _count(url: str) -> int:
    from jobs_service.core.settings import DatabaseSettings  # noqa: PLC0415
    from jobs_service.infrastructure.database import Database  # noqa: PLC0415
    from jobs_service.infrastructure.models import WebhookEvent  # noqa: PLC0415

    database = Database(url, DatabaseSettings())
    async with database.sessions() as session:
        count = await session.execute(select(func.count()).select_from(WebhookEvent))
        result = int(count.scalar_one())
    await database.close()
    return result


def main() -> None:
    """Measure both servers and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    args = parser.parse_args()
    name, prefix = f"jobs_bench_{uuid.uuid4().hex[:8]}", f"jobs-bench-{uuid.uuid4().hex[:8]}"
    database_url = asyncio.run(create_database(name))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(
            f'[[api_keys]]\nname = "bench"\nsha256 = "{"0" * 64}"\n'
            f'scopes = ["read"]\n\n[webhooks.sources.billing]\n'
            f'scheme = "standard"\nsecrets = ["{SECRET}"]\n'
            f'default_task = "do_nothing"\n'
        )
    env = {
        **os.environ,
        "JOBS_DATABASE_URL": database_url,
        "JOBS_REDIS_URL": REDIS_URL,
        "JOBS_REDIS_PREFIX": prefix,
        "JOBS_TASK_MODULES": "benchmarks.tasks",
        "JOBS_CONFIG_FILE": config.name,
        "JOBS_LOG_LEVEL": "warning",
        "JOBS_API__REQUEST_LOG": "false",
        "PYTHONPATH": str(ROOT),
    }
    jobsctl = str(Path(sys.executable).with_name("jobsctl"))
    try:
        subprocess.run([jobsctl, "migrate"], env=env, check=True, capture_output=True)
        results = {}
        for label, command, port in (
            ("jobs_service", [jobsctl, "api", "--port", "18801"], 18801),
            (
                "bare_fastapi",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "benchmarks.bare_endpoint:app",
                    "--port",
                    "18802",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                18802,
            ),
        ):
            server = _serve(command, env, port)
            try:
                url = f"http://127.0.0.1:{port}"
                results[label] = (
                    _wrk(url, args.requests, args.concurrency, args.seconds)
                    if shutil.which("wrk")
                    else asyncio.run(_load(url, args.requests, args.concurrency))
                )
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
        stored = asyncio.run(_count(database_url))
        ratio = (
            results["jobs_service"]["requests_per_s"] / results["bare_fastapi"]["requests_per_s"]
        )
        print(
            json.dumps(
                {
                    "requests": args.requests,
                    "concurrency": args.concurrency,
                    "results": results,
                    "events_stored": stored,
                    "ratio_to_bare": round(ratio, 3),
                },
                indent=2,
            )
        )
    finally:
        Path(config.name).unlink(missing_ok=True)
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


if __name__ == "__main__":
    main()
