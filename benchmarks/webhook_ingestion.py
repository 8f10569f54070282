"""Webhook ingestion (W4): requests/s and latency of POST /webhooks/<source>, against a bare
FastAPI endpoint that only parses the JSON (same uvicorn settings, same client, same run).

Standard Webhooks signatures, 1 KiB bodies, 64 concurrent connections; every event is
committed to PostgreSQL and enqueued on Redis before its 202 (the source routes to the
built-in ``process_webhook_event``, so every event gets a real ``queued`` run and a
stream message). Each server gets one second of load first (not counted: first
requests build caches and connections), then the measured run. Afterwards the rows are
counted: an event answered ``accepted`` that has no row, no queued run or no stream
message is *lost*. Where the machine's CPU went during each run is reported as shares
of one core (the server, PostgreSQL, Redis, the load generator) and as the server's CPU
per request — steadier than requests/s on a shared machine.

The load comes from ``wrk`` (Debian package ``wrk``) when installed, else from an httpx
client (which then limits the figures). ``--profile DIR`` records the gateway with
py-spy during its run (native frames included, so time in C extensions such as the
socket writes of asyncpg and uvicorn is attributed) and writes the raw stacks and a
summary of the top costs there.
Servers listen on free ports, so two runs may overlap (their figures then suffer).

Usage: ``uv run python -m benchmarks.webhook_ingestion --seconds 10``; from Python,
:func:`measure` runs one measurement and returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from benchmarks.services import REDIS_URL, clean_redis, create_database, drop_database

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parents[1]
KEY = b"benchmark-signing-key-0123456789"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
#: Distinct signed requests prepared per second of load (more than either server does,
#: so an event id is never repeated within a run: every 202 should say ``accepted``).
REQUESTS_PER_SECOND = 6000
#: Seconds of load before each measurement, not counted (first requests build caches).
WARM_UP_S = 1


def _signed(index: int, prefix: str = "msg") -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "invoice.paid", "n": index, "pad": "x" * 960}).encode()
    msg_id, ts = f"{prefix}-{index}-{uuid.uuid4().hex[:8]}", str(int(time.time()))
    mac = hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return body, {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def _load(url: str, requests: int, concurrency: int, prefix: str = "msg") -> dict[str, float]:
    bodies = [_signed(i, prefix) for i in range(requests)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted = 0
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                body, headers = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/webhooks/billing", content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                accepted += b'"accepted"' in response.content

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": requests / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "requests": requests,
        "status_202": statuses.get(202, 0),
        "other_status": requests - statuses.get(202, 0),
        "accepted": accepted,
    }


_LUA = """
local requests = {}
local index = 0
s202, accepted, other = 0, 0, 0  -- globals: done() reads them with thread:get
for line in io.lines(os.getenv("WEBHOOK_REQUESTS")) do
  local id, ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
  requests[#requests + 1] = wrk.format("POST", "/webhooks/billing", {
    ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
    ["content-type"] = "application/json"}, body)
end
local threads = {}
function setup(thread)
  thread:set("id", #threads)  -- each thread sends its own share: no accidental duplicates
  table.insert(threads, thread)
end
function init(args)
  index = id
end
request = function()
  index = index + 2
  return requests[index % #requests + 1]
end
response = function(status, headers, body)
  if status == 202 then
    s202 = s202 + 1
    if body:find('"accepted"', 1, true) then accepted = accepted + 1 end
  else
    other = other + 1
  end
end
function done(summary, latency, requests)
  local t202, tacc, toth = 0, 0, 0
  for _, thread in ipairs(threads) do
    t202 = t202 + thread:get("s202")
    tacc = tacc + thread:get("accepted")
    toth = toth + thread:get("other")
  end
  io.write(string.format("STATUS %d %d %d\\n", t202, tacc, toth))
end
"""


def _write_requests(directory: Path, requests: int, prefix: str = "msg") -> None:
    """The signed requests and the wrk script that sends them, in ``directory``."""
    lines = []
    for index in range(requests):
        body, headers = _signed(index, prefix)
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


def _wrk(url: str, directory: Path, concurrency: int, seconds: int) -> dict[str, float]:
    """Drive the server with wrk (C, so the load generator is not the bottleneck)."""
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
        elif line.startswith("STATUS "):
            numbers["status_202"], numbers["accepted"], numbers["other_status"] = (
                float(part) for part in parts[1:4]
            )
    return numbers


def _milliseconds(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _free_port() -> int:
    """A port nobody listens on now (two runs of this benchmark may overlap)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    for _ in range(400):
        if process.poll() is not None:
            msg = f"server exited with {process.returncode}; see {log}"
            raise RuntimeError(msg)
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=0.5)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    msg = f"server did not start; see {log}"
    raise RuntimeError(msg)


async def _stored(url: str, stream_prefix: str) -> dict[str, int]:
    """Events, their queued runs and the stream's messages, counted after the run."""
    import asyncpg  # noqa: PLC0415

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        events = await connection.fetchval("SELECT count(*) FROM webhook_events")
        with_run = await connection.fetchval(
            "SELECT count(*) FROM webhook_events e JOIN job_runs r ON r.run_id = e.run_id"
        )
        failed = await connection.fetchval(
            "SELECT count(*) FROM webhook_events WHERE status = 'failed'"
        )
    finally:
        await connection.close()
    async with Redis.from_url(REDIS_URL) as redis:
        streams = [key async for key in redis.scan_iter(match=f"{stream_prefix}*", _type="stream")]
        messages = sum([await redis.xlen(stream) for stream in streams])
    return {
        "rows_stored": int(events),
        "rows_with_run": int(with_run),
        "rows_failed": int(failed),
        "stream_messages": int(messages),
    }


def _profiler() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path.home() / ".local/bin/py-spy"] if p.exists()), None
    )


def _summarise_profile(raw: Path, top: int = 40) -> str:
    """Inclusive and self shares of the recorded stacks, busiest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [re.sub(r"\S*(site-packages|src)/", "", frame) for frame in stack.split(";")]
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in frames]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    lines = [f"samples: {total}", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top // 2)]
    return "\n".join(lines) + "\n"


def _cpu_seconds(names: tuple[str, ...] = (), pid: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system) used so far by ``pid`` or by every process named one of
    ``names`` (Linux ``/proc``; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat") if pid is None else [Path(f"/proc/{pid}/stat")]:
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if pid is None and name not in names:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        used[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return used


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


_OTHERS = {"postgres": ("postgres",), "redis": ("redis-server",)}


def _drive(
    url: str, requests: int, concurrency: int, seconds: int, *, profile: Path | None, pid: int
) -> dict[str, float]:
    """Warm the server up (first requests build caches and connections), then measure."""
    directory = Path(tempfile.mkdtemp())
    warm = directory / "warm-up"
    warm.mkdir()
    recorder = None
    try:
        if shutil.which("wrk"):
            _write_requests(warm, WARM_UP_S * REQUESTS_PER_SECOND, prefix="warm")
            warmed = _wrk(url, warm, concurrency, WARM_UP_S)
            _write_requests(directory, requests)
        else:
            warmed = asyncio.run(_load(url, 200, concurrency, prefix="warm"))
        if profile is not None and (py_spy := _profiler()) is not None:
            profile.mkdir(parents=True, exist_ok=True)
            recorder = subprocess.Popen(
                [
                    *(py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250"),
                    *("-f", "raw", "-o", str(profile / "gateway.txt"), "--native"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        server_before = _cpu_seconds(pid=pid)
        others_before = {name: _cpu_seconds(names) for name, names in _OTHERS.items()}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        numbers = (
            _wrk(url, directory, concurrency, seconds)
            if shutil.which("wrk")
            else asyncio.run(_load(url, requests, concurrency))
        )
        elapsed = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    numbers["warm_up_accepted"] = warmed.get("accepted", 0.0)
    # Where the machine's cores went during the run, as a share of one core.
    numbers["server_cpu_share"] = round(
        _cpu_used(server_before, _cpu_seconds(pid=pid)) / elapsed, 3
    )
    for name, names in _OTHERS.items():
        used = _cpu_used(others_before[name], _cpu_seconds(names))
        numbers[f"{name}_cpu_share"] = round(used / elapsed, 3)
    # wrk is a child of this process (the httpx fallback runs inside it: not counted).
    numbers["load_generator_cpu_share"] = round(
        (
            children.ru_utime
            + children.ru_stime
            - children_before.ru_utime
            - children_before.ru_stime
        )
        / elapsed,
        3,
    )
    done = numbers.get("requests", 0.0)
    if done:
        numbers["server_cpu_us_per_request"] = round(
            numbers["server_cpu_share"] * elapsed / done * 1e6, 1
        )
    if recorder is not None and profile is not None:
        recorder.wait(timeout=60)
        raw = profile / "gateway.txt"
        if raw.exists():
            (profile / "summary.txt").write_text(_summarise_profile(raw))
    return numbers


def measure(
    *,
    seconds: int = 10,
    concurrency: int = 64,
    requests: int | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run both contestants once, the gateway first; return their figures and the ratio.

    Each contestant's dict holds ``requests_per_s``, ``p50_ms``, ``p99_ms``,
    ``requests``, ``status_202``, ``accepted`` and ``other_status``; the gateway's also
    ``rows_stored``, ``rows_with_run``, ``rows_failed``, ``stream_messages`` and
    ``lost`` (events answered ``accepted`` that are not stored with a queued run and a
    stream message; must be 0).
    """
    requests = requests or seconds * REQUESTS_PER_SECOND
    name, prefix = f"jobs_bench_{uuid.uuid4().hex[:8]}", f"jobs-bench-{uuid.uuid4().hex[:8]}"
    database_url = asyncio.run(create_database(name))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(
            f'[[api_keys]]\nname = "bench"\nsha256 = "{"0" * 64}"\n'
            f'scopes = ["read"]\n\n[webhooks.sources.billing]\n'
            f'scheme = "standard"\nsecrets = ["{SECRET}"]\n'
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
    bare = [sys.executable, "-m", "uvicorn", "benchmarks.bare_endpoint:app"]
    bare += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    quiet = ["--log-level", "warning"]
    try:
        subprocess.run([jobsctl, "migrate"], env=env, check=True, capture_output=True)
        results: dict[str, dict[str, float]] = {}
        jobs_port, bare_port = _free_port(), _free_port()
        for label, command, port in (
            ("jobs_service", [jobsctl, "api", "--port", str(jobs_port)], jobs_port),
            ("bare_fastapi", [*bare, "--port", str(bare_port), *quiet], bare_port),
        ):
            server = _serve(command, env, port)
            try:
                results[label] = _drive(
                    f"http://127.0.0.1:{port}",
                    requests,
                    concurrency,
                    seconds,
                    profile=profile if label == "jobs_service" else None,
                    pid=server.pid,
                )
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
        jobs = results["jobs_service"]
        jobs.update(asyncio.run(_stored(database_url, prefix)))
        # Requests in flight when wrk stops may be stored without their 202 being
        # counted, so more rows than acceptances is fine; fewer is a loss.
        jobs["lost"] = max(
            0,
            int(jobs.get("accepted", 0) + jobs["warm_up_accepted"])
            - min(jobs["rows_stored"], jobs["rows_with_run"], jobs["stream_messages"]),
        )
        ratio = jobs["requests_per_s"] / results["bare_fastapi"]["requests_per_s"]
        return {
            "benchmark": "w4_webhook_ingestion",
            "seconds": seconds,
            "concurrency": concurrency,
            "distinct_requests": requests,
            "results": results,
            "ratio_to_bare": round(ratio, 3),
        }
    finally:
        Path(config.name).unlink(missing_ok=True)
        asyncio.run(drop_database(name))
        asyncio.run(clean_redis(prefix))


def main() -> None:
    """Measure both servers and print the comparison."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"distinct signed requests (default {REQUESTS_PER_SECOND} per second of load)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    parser.add_argument(
        "--profile", type=Path, default=None, help="record the gateway with py-spy into DIR"
    )
    args = parser.parse_args()
    print(
        json.dumps(
            measure(
                seconds=args.seconds,
                concurrency=args.concurrency,
                requests=args.requests,
                profile=args.profile,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
