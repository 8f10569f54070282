"""The audit log: every operator action recorded with who, what, on what, and outcome."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import pytest
from fastapi import Depends
from sqlalchemy import text

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.gateway.audit import audit_entry, audit_writer
from jobs_service.gateway.security import require_scope
from tests.conftest import serve_app
from tests.support.processes import jobsctl

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import httpx
    from fastapi import FastAPI

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

ADMIN = "audit-admin-key"
OPERATOR = "audit-operator-key"
READER = "audit-reader-key"
SW_KEY = b"audit-signing-key-0123456789abcd"


def _keys() -> list[dict[str, Any]]:
    return [
        {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes}
        for name, key, scopes in (
            ("admin", ADMIN, ["admin"]),
            ("operator", OPERATOR, ["read", "operate"]),
            ("reader", READER, ["read"]),
        )
    ]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _app(make_settings: Callable[..., Settings], **overrides: Any) -> FastAPI:
    overrides.setdefault("api_keys", _keys())
    return create_app(make_settings(**overrides), broker=broker, embedded=True, scheduler=False)


async def _audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params=params, headers=auth(ADMIN))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_operator_actions_are_recorded_with_key_action_target_and_outcome(
    make_settings: Callable[..., Settings],
) -> None:
    """Create, change, trigger and delete a schedule and submit a run: one entry each,
    newest first, naming the key, the route, the id acted on and the status; reads are
    not recorded."""
    async with serve_app(_app(make_settings)) as client:
        created = await client.post(
            "/v1/schedules",
            json={
                "name": "nightly",
                "task": "count_items",
                "kwargs": {"items": ["a"]},
                "schedule": {"type": "interval", "seconds": 3600},
            },
            headers=auth(OPERATOR),
        )
        schedule_id = str(created.json()["id"])
        patched = await client.patch(
            f"/v1/schedules/{schedule_id}", json={"enabled": False}, headers=auth(OPERATOR)
        )
        await client.get(f"/v1/schedules/{schedule_id}", headers=auth(READER))
        await client.post(f"/v1/schedules/{schedule_id}/trigger", headers=auth(ADMIN))
        await client.delete(f"/v1/schedules/{schedule_id}", headers=auth(OPERATOR))
        submitted = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(OPERATOR)
        )
        entries = await _audit(client)
    assert created.status_code == 201
    assert [(e["actor"], e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("operator", "POST /v1/tasks/{name}", "count_items", 202),
        ("operator", "DELETE /v1/schedules/{schedule_id}", schedule_id, 204),
        ("admin", "POST /v1/schedules/{schedule_id}/trigger", schedule_id, 202),
        ("operator", "PATCH /v1/schedules/{schedule_id}", schedule_id, 200),
        ("operator", "POST /v1/schedules", schedule_id, 201),
    ]
    assert entries[0]["detail"]["location"] == f"/v1/runs/{submitted.json()['run_id']}"
    assert entries[3]["request_id"] == patched.headers["x-request-id"]
    assert entries[3]["detail"] == {
        "path": f"/v1/schedules/{schedule_id}",
        "client": "127.0.0.1",
    }
    at = datetime.fromisoformat(entries[0]["at"])
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_one_resource_is_one_target_however_its_path_spells_it(
    make_settings: Callable[..., Settings],
) -> None:
    """A run retried by its numeric id is recorded under its run id, and schedule
    ``01`` under ``1``: a search by target finds every action on it, and only those."""
    async with serve_app(_app(make_settings)) as client:
        submitted = await client.post(
            "/v1/tasks/fail_on_purpose", json={"kwargs": {}}, headers=auth(OPERATOR)
        )
        run_id = submitted.json()["run_id"]
        for _ in range(200):
            run = (await client.get(f"/v1/runs/{run_id}", headers=auth(READER))).json()
            if run["status"] in ("failed", "dead"):
                break
            await anyio.sleep(0.02)
        retried = await client.post(f"/v1/runs/{run['id']}/retry", headers=auth(OPERATOR))
        created = await client.post(
            "/v1/schedules",
            json={
                "name": "padded",
                "task": "count_items",
                "kwargs": {"items": []},
                "schedule": {"type": "interval", "seconds": 3600},
            },
            headers=auth(OPERATOR),
        )
        padded = f"0{created.json()['id']}"
        paused = await client.patch(
            f"/v1/schedules/{padded}", json={"enabled": False}, headers=auth(OPERATOR)
        )
        by_run_id = await _audit(client, target=run_id)
        by_schedule = await _audit(client, target=str(created.json()["id"]))
    assert (retried.status_code, paused.status_code) == (202, 200)
    assert [e["action"] for e in by_run_id] == ["POST /v1/runs/{run_id}/retry"]
    assert [e["action"] for e in by_schedule] == [
        "PATCH /v1/schedules/{schedule_id}",
        "POST /v1/schedules",
    ]


async def test_an_id_not_spelt_in_digits_is_refused_so_no_action_hides_under_it(
    make_settings: Callable[..., Settings],
) -> None:
    """``/v1/schedules/1.0``, ``+1``, `` 1`` or ``1_0`` are not schedule 1 (or 10): a
    422 that changes nothing, so every action on schedule 1 is found under target ``1``.
    Every numeric path id is read the same way (webhook events too)."""
    async with serve_app(_app(make_settings)) as client:
        created = await client.post(
            "/v1/schedules",
            json={
                "name": "spelt",
                "task": "count_items",
                "kwargs": {"items": []},
                "schedule": {"type": "interval", "seconds": 3600},
            },
            headers=auth(OPERATOR),
        )
        schedule_id = created.json()["id"]
        refused = [
            await client.patch(
                f"/v1/schedules/{spelling}", json={"enabled": False}, headers=auth(OPERATOR)
            )
            for spelling in (f"{schedule_id}.0", f"+{schedule_id}", f"%20{schedule_id}", "1_0")
        ]
        replay = await client.post("/v1/webhooks/events/+1/replay", headers=auth(OPERATOR))
        listed = await client.get(
            "/v1/runs", params={"schedule_id": f"{schedule_id}.0"}, headers=auth(READER)
        )
        shown = await client.get(f"/v1/schedules/{schedule_id}", headers=auth(READER))
        by_schedule = await _audit(client, target=str(schedule_id))
    assert [r.status_code for r in refused] == [422] * 4
    assert all(r.json()["type"] == "urn:jobs-service:problem:invalid-request" for r in refused)
    assert "digits" in refused[0].json()["detail"]
    assert (replay.status_code, listed.status_code) == (422, 422)
    assert shown.json()["enabled"] is True
    assert [e["action"] for e in by_schedule] == ["POST /v1/schedules"]


async def test_the_entry_names_its_request_by_the_id_the_answer_carried(
    make_settings: Callable[..., Settings],
) -> None:
    """A client's X-Request-ID of up to 128 characters is kept whole, in the answer and
    in the audit entry (it once held 64 and cut longer ones); a longer one is replaced
    by a generated id, never cut: the entry's ``request_id`` is always the answer's
    ``X-Request-ID``."""
    fits, too_long = "req-" + "a" * 124, "req-" + "b" * 125
    async with serve_app(_app(make_settings)) as client:
        answers = [
            await client.post(
                "/v1/tasks/count_items",
                json={"kwargs": {"items": []}},
                headers={**auth(OPERATOR), "X-Request-ID": given},
            )
            for given in (fits, too_long)
        ]
        entries = await _audit(client, action="POST /v1/tasks/{name}")
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].headers["x-request-id"] == fits
    assert answers[1].headers["x-request-id"] not in (too_long, too_long[:128])
    assert [e["request_id"] for e in reversed(entries)] == [
        a.headers["x-request-id"] for a in answers
    ]


async def test_refused_attempts_are_recorded_too(make_settings: Callable[..., Settings]) -> None:
    """No key, a wrong key and a key without the scope: each attempt is an entry with
    its 401/403. The actor is ``anonymous`` where no key was recognised, and the key's
    name where one was but lacks the scope (who tried is what an audit is for)."""
    async with serve_app(_app(make_settings)) as client:
        await client.post("/v1/tasks/count_items", json={"kwargs": {"items": []}})
        await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth("guess")
        )
        await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(READER)
        )
        entries = await _audit(client)
    assert [(e["actor"], e["action"], e["outcome"]) for e in entries] == [
        ("reader", "POST /v1/tasks/{name}", 403),
        ("anonymous", "POST /v1/tasks/{name}", 401),
        ("anonymous", "POST /v1/tasks/{name}", 401),
    ]


async def test_a_loopback_caller_without_configured_keys_is_recorded_as_local(
    make_settings: Callable[..., Settings],
) -> None:
    """Without [[api_keys]] the actor is the loopback principal, ``local``."""
    async with serve_app(_app(make_settings, api_keys=[])) as client:
        await client.post("/v1/tasks/count_items", json={"kwargs": {"items": []}})
        response = await client.get("/v1/audit")
    assert response.status_code == 200
    assert [(e["actor"], e["target"]) for e in response.json()["items"]] == [
        ("local", "count_items")
    ]


async def test_routes_added_later_are_recorded_without_being_listed(
    make_settings: Callable[..., Settings],
) -> None:
    """The audit is generic: a new mutating route (as retry and cancel are) is recorded
    by its template and path parameter, and a bad request to it with its 422."""
    app = _app(make_settings)

    async def poke(thing_id: int, _: Annotated[str, Depends(require_scope("operate"))]) -> dict:
        return {"poked": thing_id}

    app.add_api_route("/v1/things/{thing_id}/poke", poke, methods=["POST"])
    async with serve_app(app) as client:
        ok = await client.post("/v1/things/7/poke", headers=auth(OPERATOR))
        bad = await client.post("/v1/things/seven/poke", headers=auth(OPERATOR))
        entries = await _audit(client)
    assert (ok.status_code, bad.status_code) == (200, 422)
    assert [(e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("POST /v1/things/{thing_id}/poke", "seven", 422),
        ("POST /v1/things/{thing_id}/poke", "7", 200),
    ]


async def test_webhook_ingestion_is_not_an_operator_action_but_replay_is(
    make_settings: Callable[..., Settings],
) -> None:
    """A sender's POST /webhooks/{source} leaves no entry; replaying its event does."""
    secret = "whsec_" + base64.b64encode(SW_KEY).decode()
    sources = {
        "billing": {"scheme": "standard", "secrets": [secret], "default_task": "record_webhook"}
    }
    app = _app(make_settings, webhooks={"sources": sources})
    body = json.dumps({"type": "invoice.paid"}).encode()
    ts = int(time.time())
    mac = hmac.new(SW_KEY, f"msg_1.{ts}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }
    async with serve_app(app) as client:
        received = await client.post("/webhooks/billing", content=body, headers=headers)
        event_id = received.json()["event_id"]
        await broker.wait_all()  # type: ignore[attr-defined]
        await app.state.runtime.recorder.wait_flushed()  # a replay waits for the run's end
        before = await _audit(client)
        replayed = await client.post(
            f"/v1/webhooks/events/{event_id}/replay", headers=auth(OPERATOR)
        )
        after = await _audit(client)
    assert received.status_code == 202
    assert before == []
    assert replayed.status_code == 202
    assert [(e["actor"], e["action"], e["target"]) for e in after] == [
        ("operator", "POST /v1/webhooks/events/{event_id}/replay", str(event_id))
    ]


async def test_a_failed_audit_write_is_logged_and_the_action_still_succeeds(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """With the audit table gone, the run is still queued (202, not 500) and the log has
    audit-write-failed naming the action, so the trail survives in the log."""
    app = _app(make_settings)
    async with serve_app(app) as client:
        async with app.state.runtime.database.engine.begin() as connection:
            await connection.execute(text("DROP TABLE audit_log"))
        response = await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(OPERATOR)
        )
    assert response.status_code == 202
    failed = [line for line in capfd.readouterr().err.splitlines() if "audit-write-failed" in line]
    assert len(failed) == 1, failed
    line = json.loads(failed[0])
    assert line["action"] == "POST /v1/tasks/{name}"
    assert (line["actor"], line["target"], line["outcome"]) == ("operator", "count_items", 202)
    assert line["audit_request_id"] == response.headers["x-request-id"]
    assert "audit_log" in line["error"]
    assert line["level"] == "error"


async def test_a_write_that_fails_for_a_moment_is_retried(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    """The table missing for one write, then back: the entry is kept and written, and
    nothing is reported lost."""
    app = _app(make_settings)
    async with serve_app(app) as client:
        engine = app.state.runtime.database.engine
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
        await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(OPERATOR)
        )
        writer = audit_writer(app.state.runtime)
        await writer.flush()
        waiting = writer.pending
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
        entries = await _audit(client)
    assert waiting == 1
    assert [(e["actor"], e["target"]) for e in entries] == [("operator", "count_items")]
    assert "audit-write-failed" not in capfd.readouterr().err


async def test_the_audit_list_filters_and_pages_and_is_admin_only(
    make_settings: Callable[..., Settings],
) -> None:
    """actor, action, target and since filter; limit/cursor page through without
    overlap; an operator key gets 403; a naive since is a 422; a foreign cursor a 400."""
    async with serve_app(_app(make_settings)) as client:
        for items in (["a"], ["b"], ["c"]):
            await client.post(
                "/v1/tasks/count_items", json={"kwargs": {"items": items}}, headers=auth(OPERATOR)
            )
        await client.post(
            "/v1/tasks/count_items/batch",
            json={"items": [{"kwargs": {"items": []}}]},
            headers=auth(ADMIN),
        )
        by_admin = await _audit(client, actor="admin")
        batch = await _audit(client, action="POST /v1/tasks/{name}/batch")
        first = await client.get("/v1/audit", params={"limit": 2}, headers=auth(ADMIN))
        second = await client.get(
            "/v1/audit",
            params={"limit": 2, "cursor": first.json()["next_cursor"]},
            headers=auth(ADMIN),
        )
        future = await _audit(client, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
        past = await _audit(client, since=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
        target = await _audit(client, target="count_items")
        forbidden = await client.get("/v1/audit", headers=auth(OPERATOR))
        naive = await client.get(
            "/v1/audit", params={"since": "2026-01-01T00:00:00"}, headers=auth(ADMIN)
        )
        foreign = await client.get("/v1/audit", params={"cursor": "xyz"}, headers=auth(ADMIN))
    assert [e["actor"] for e in by_admin] == ["admin"]
    assert [e["action"] for e in batch] == ["POST /v1/tasks/{name}/batch"]
    pages = first.json()["items"] + second.json()["items"]
    assert len({e["id"] for e in pages}) == 4
    assert [e["id"] for e in pages] == sorted((e["id"] for e in pages), reverse=True)
    assert second.json()["next_cursor"] is None
    assert future == []
    assert len(past) == 4
    assert len(target) == 4
    assert forbidden.status_code == 403
    assert naive.status_code == 422
    assert foreign.status_code == 400


def test_several_path_parameters_make_one_target() -> None:
    """A route with two parameters names both in the target."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/a/1/b/2",
        "path_params": {"a": 1, "b": "2"},
        "state": {"principal": "ops", "request_id": "r1"},
    }
    entry = audit_entry(scope, 200, None)
    assert (entry.target, entry.action, entry.actor, entry.request_id) == (
        "a=1,b=2",
        "POST /v1/a/1/b/2",
        "ops",
        "r1",
    )


async def test_jobsctl_audit_lists_what_the_api_recorded(
    make_settings: Callable[..., Settings], sqlite_url: str, tmp_path: Path
) -> None:
    """`jobsctl audit` prints the entries as a table, or JSON, with the same filters."""
    async with serve_app(_app(make_settings)) as client:
        await client.post(
            "/v1/tasks/count_items", json={"kwargs": {"items": []}}, headers=auth(OPERATOR)
        )
        await client.post(
            "/v1/tasks/count_items/batch",
            json={"items": [{"kwargs": {"items": []}}]},
            headers=auth(ADMIN),
        )
    env = {"JOBS_DATABASE_URL": sqlite_url}
    table = jobsctl("audit", env=env, cwd=tmp_path)
    filtered = jobsctl(
        "audit", "--actor", "admin", "--since", "1h", "--json", env=env, cwd=tmp_path
    )
    none = jobsctl("audit", "--since", "2999-01-01", "--json", env=env, cwd=tmp_path)
    bad = jobsctl("audit", "--since", "yesterday", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "AT",
        "(UTC)",
        "ACTOR",
        "ACTION",
        "TARGET",
        "OUTCOME",
        "REQUEST",
        "ID",
    ]
    assert "admin" in lines[1]
    assert "POST /v1/tasks/{name}/batch" in lines[1]
    assert "operator" in lines[2]
    assert len(lines) == 3
    assert filtered.returncode == 0, filtered.stderr
    assert [(e["actor"], e["target"], e["outcome"]) for e in json.loads(filtered.stdout)] == [
        ("admin", "count_items", 202)
    ]
    assert json.loads(none.stdout) == []
    assert bad.returncode == 2
    assert "neither an ISO 8601 time nor an age" in bad.stderr


def test_actions_taken_with_jobsctl_are_audited_with_their_exit_codes(tmp_path: Path) -> None:
    """The CLI changes the database directly, past the gateway's middleware: its queue,
    cancel, pause and replay commands record their own entries (a refused one too, with
    its exit code); reads record nothing."""
    import getpass  # noqa: PLC0415

    env = {"JOBS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert jobsctl("migrate", env=env, cwd=tmp_path).returncode == 0
    queued = jobsctl("enqueue", "check_system_health", "--wait", env=env, cwd=tmp_path)
    run_id = json.loads(queued.stdout)["run_id"]
    assert jobsctl("runs", run_id, env=env, cwd=tmp_path).returncode == 0
    refused = jobsctl("runs", "cancel", run_id, env=env, cwd=tmp_path)
    missing = jobsctl("schedules", "pause", "999", env=env, cwd=tmp_path)
    listed = jobsctl("audit", "--json", env=env, cwd=tmp_path)
    assert (queued.returncode, refused.returncode, missing.returncode) == (0, 1, 1)
    actor = f"cli:{getpass.getuser()}"
    assert [
        (e["actor"], e["action"], e["target"], e["outcome"]) for e in json.loads(listed.stdout)
    ] == [
        (actor, "jobsctl schedules pause", "999", 1),
        (actor, "jobsctl runs cancel", run_id, 1),
        (actor, "jobsctl enqueue", "check_system_health", 0),
    ]


def test_jobsctl_audit_on_an_unmigrated_database_says_so(tmp_path: Path) -> None:
    """No audit_log table: one line pointing at `jobsctl migrate`, exit code 1."""
    env = {"JOBS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    result = jobsctl("audit", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "jobsctl audit: cannot read the audit log (OperationalError: no such table: "
        "audit_log); is the database migrated? (jobsctl migrate)"
    ]


def test_control_characters_are_escaped_so_postgresql_accepts_the_row() -> None:
    """`POST /v1/%00` needs no key; its NUL must not sink the batch it is written with."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from jobs_service.infrastructure.repositories.audit import NewAuditEntry  # noqa: PLC0415

    row = NewAuditEntry(
        at=datetime.now(UTC),
        actor="anonymous",
        action="POST /v1/\x00",
        target="a\x00b",
        outcome=401,
        detail={"path": "/v1/\x00", "nested": ["\x1b[31m"]},
    ).row()
    assert "\x00" not in repr(row).replace("\\\\x00", "")
    assert row["action"] == "POST /v1/\\x00"
    assert row["target"] == "a\\x00b"
    assert row["detail"] == {"path": "/v1/\\x00", "nested": ["\\x1b[31m"]}
