"""A starting `jobsctl run` leaves alone the run another embedded process is running.

In the embedded mode `jobsctl enqueue --wait` runs its task in its own process, on the
same SQLite file as `jobsctl run` (the quick start uses both). `jobsctl run` used to
mark every queued or running run `failed` (Interrupted) when it started, whichever
process ran it: the CLI's run then succeeded, but its history said failed and the
command exited 1.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING

from tests.support.processes import JOBSCTL, _env, free_port, started, wait_for_http

if TYPE_CHECKING:
    from pathlib import Path

ENV = {"JOBS_TASK_MODULES": "tests.support.sample_tasks"}


def test_starting_jobsctl_run_leaves_a_cli_run_in_progress_alone(tmp_path: Path) -> None:
    cli_log = tmp_path / "cli.log"
    with cli_log.open("w") as sink:
        cli = subprocess.Popen(
            [*JOBSCTL, "enqueue", "sleep_for", "--kwargs", '{"seconds": 8}', "--wait"],
            env=_env(ENV),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while '"job-start"' not in cli_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # until the CLI's run has started (it sleeps 8 s)
        port = free_port()
        log = tmp_path / "run.log"
        with started("run", "--port", str(port), env=ENV, log=log, cwd=tmp_path) as process:
            wait_for_http(f"http://127.0.0.1:{port}/health", process=process, log=log)
            out, _ = cli.communicate(timeout=30)
        err = cli_log.read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
    assert '"job-success"' in err  # the task itself ran to the end
    answer = json.loads(out)
    assert answer["status"] == "succeeded", answer
    assert cli.returncode == 0
