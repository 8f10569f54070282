"""The schedules API: create, inspect, change, pause, delete, trigger, and bad input."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import update

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Schedule
from jobs_service.scheduler.labels import sync_label_schedules
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio


async def _app(make_settings: Callable[..., Settings]) -> Any:
    settings = make_settings()
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    await sync_label_schedules(database, broker)  # what a scheduler does at start
    await database.close()
    return create_app(settings, broker=broker)


def cron(expression: str = "0 9 * * 1", zone: str = "Asia/Singapore") -> dict[str, Any]:
    return {"type": "cron", "cron": expression, "timezone": zone}


async def create(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    body.setdefault("name", f"weekly-{datetime.now(UTC).timestamp()}")
    body.setdefault("task", "count_items")
    body.setdefault("kwargs", {"items": ["a"]})
    return await client.post("/v1/schedules", json=body, headers=headers)


async def test_create_a_cron_schedule_and_see_its_next_fires(
    make_settings: Callable[..., Settings],
) -> None:
    """201 with Location; next_fires are 5 Monday 09:00 Singapore = 01:00 UTC."""
    async with serve_app(await _app(make_settings)) as client:
        response = await create(
            client,
            name="kpi-report",
            schedule=cron(),
            description="weekly KPIs",
            deliver_to={"email": ["a@b.c"]},
        )
        detail = (await client.get(response.headers["location"])).json()
    assert response.status_code == 201
    body = response.json()
    assert body["schedule"] == {
        "type": "cron",
        "cron": "0 9 * * 1",
        "timezone": "Asia/Singapore",
        "seconds": None,
        "at": None,
    }
    assert body["source"] == "api"
    assert body["created_by"] == "local"
    assert body["overlap"] == "skip"
    assert len(detail["next_fires"]) == 5
    for fire in detail["next_fires"]:
        utc = datetime.fromisoformat(fire["utc"])
        local = datetime.fromisoformat(fire["local"])
        assert utc == local
        assert (utc.weekday(), utc.hour, utc.minute) == (0, 1, 0)
        assert local.utcoffset() == timedelta(hours=8)
        assert (local.hour, local.minute) == (9, 0)
    assert detail["recent_runs"] == []


async def test_interval_and_once_schedules(make_settings: Callable[..., Settings]) -> None:
    """Interval fires every N seconds; once lists its single fire."""
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    async with serve_app(await _app(make_settings)) as client:
        every = (await create(client, schedule={"type": "interval", "seconds": 3600})).json()
        once = (await create(client, schedule={"type": "once", "at": at.isoformat()})).json()
    fires = [datetime.fromisoformat(f["utc"]) for f in every["next_fires"]]
    assert [b - a for a, b in itertools.pairwise(fires)] == [timedelta(hours=1)] * 4
    assert [datetime.fromisoformat(f["utc"]) for f in once["next_fires"]] == [at]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"schedule": cron("61 * * * *")}, 422, "minute 61"),
        ({"schedule": cron("* * *")}, 422, "5 fields"),
        ({"schedule": cron(zone="Mars/Olympus")}, 422, "unknown timezone"),
        ({"schedule": cron(zone="localtime")}, 422, "'localtime' is not a place"),
        ({"schedule": cron(zone="Factory")}, 422, "'Factory' is not a place"),
        ({"schedule": cron(zone="posixrules")}, 422, "'posixrules' is not a place"),
        ({"schedule": cron(zone="posix/Europe/Berlin")}, 422, "use 'Europe/Berlin'"),
        ({"schedule": cron(zone="right/UTC")}, 422, "host-specific copy of a zone; use 'UTC'"),
        ({"schedule": {"type": "interval", "seconds": 0}}, 422, "greater than or equal to 1"),
        ({"schedule": {"type": "once", "at": "2020-01-01T00:00:00+00:00"}}, 422, "in the past"),
        ({"schedule": {"type": "once", "at": "2031-01-01T00:00:00"}}, 422, "timezone"),
        ({"schedule": {"type": "weekly"}}, 422, "type"),
        ({"schedule": cron(), "task": "no_such_task"}, 422, "no_such_task"),
        ({"schedule": cron(), "kwargs": {"items": 5}}, 422, "items"),
        ({"schedule": cron(), "overlap": "sometimes"}, 422, "overlap"),
        ({"schedule": cron(), "catchup_window_s": -1}, 422, "catchup_window_s"),
        ({"schedule": {"type": "interval", "seconds": 2**31}}, 422, "less than or equal"),
        ({"schedule": cron("0 9 * * 1" + " " * 300)}, 422, "at most 200"),
        ({"schedule": {"type": "once", "at": "9999-12-31T23:59:59-05:00"}}, 422, "range"),
        ({"schedule": cron("0 0 30 2 *")}, 422, "never"),
    ],
)
async def test_bad_schedules_are_422_with_a_clear_message(
    make_settings: Callable[..., Settings],
    body: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    """Every way a schedule could never work is refused at submit time."""
    async with serve_app(await _app(make_settings)) as client:
        response = await create(client, **body)
        listed = (await client.get("/v1/schedules?source=api")).json()["items"]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.text
    assert listed == []


async def test_an_unknown_task_in_the_body_is_422_invalid_schedule_as_documented(
    make_settings: Callable[..., Settings],
) -> None:
    """The path names the schedules, which exist: the task the body names is content the
    gateway cannot process (422 ``invalid-schedule``), not a missing resource (404
    ``unknown-task`` is for ``/v1/tasks/{name}``). The API reference says the same."""
    async with serve_app(await _app(make_settings)) as client:
        response = await client.post(
            "/v1/schedules",
            json={"name": "nightly", "task": "no_such_task", "schedule": cron()},
        )
        spec = (await client.get("/openapi.json")).json()
    assert response.status_code == 422
    assert response.json()["type"] == "urn:jobs-service:problem:invalid-schedule"
    assert response.json()["detail"] == "task: no task named 'no_such_task' is registered"
    answers = spec["paths"]["/v1/schedules"]["post"]["responses"]
    assert "404" not in answers
    assert "unknown task (invalid-schedule)" in answers["422"]["description"]


async def test_duplicate_names_are_409(make_settings: Callable[..., Settings]) -> None:
    """Schedule names are unique."""
    async with serve_app(await _app(make_settings)) as client:
        first = await create(client, name="nightly", schedule=cron())
        second = await create(client, name="nightly", schedule=cron())
    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["type"].endswith("schedule-conflict")


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("check_system_health", "kept for the label schedule of task check_system_health"),
        ("count_items", "kept for the label schedule of task count_items"),
        ("count_items#2", "has the form <task>#<n>"),
        ("export_orders#3", "has the form <task>#<n>"),
    ],
)
async def test_names_label_schedules_use_or_could_use_are_409(
    make_settings: Callable[..., Settings], name: str, detail: str
) -> None:
    """A scheduler syncs label schedules under their task's name (``<task>#<n>`` for the
    second cron on), and names are unique: an API schedule holding one would stop that
    sync, so the name is refused when it is given, by create or by rename."""
    async with serve_app(await _app(make_settings)) as client:
        created = await create(client, name=name, schedule=cron())
        other = (await create(client, name="nightly_export", schedule=cron())).json()
        renamed = await client.patch(f"/v1/schedules/{other['id']}", json={"name": name})
    for refused in (created, renamed):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("schedule-conflict")
        assert detail in refused.json()["detail"]
    assert other["name"] == "nightly_export"  # a task-like name no task has is free


async def test_a_schedule_this_host_cannot_read_is_shown_with_no_next_fires(
    make_settings: Callable[..., Settings],
) -> None:
    """A row whose zone this host's tz database lacks (written by a host with a newer
    one) is shown, with no next fires and the reason, instead of a 500; fixing its
    timing makes it whole again."""
    app = await _app(make_settings)
    async with serve_app(app) as client:
        created = (await create(client, schedule=cron("0 9 * * 1", "Europe/Berlin"))).json()
        path = f"/v1/schedules/{created['id']}"
        async with app.state.runtime.database.engine.begin() as connection:
            await connection.execute(
                update(Schedule)
                .where(Schedule.id == created["id"])
                .values(timezone="America/Nowhere")
            )
        unreadable = await client.get(path)
        fixed = await client.patch(path, json={"schedule": cron("0 9 * * 1", "Europe/Berlin")})
    assert unreadable.status_code == 200, unreadable.text
    assert unreadable.json()["next_fires"] == []
    assert unreadable.json()["timing_error"] == (
        "unknown timezone 'America/Nowhere' (use an IANA name such as Europe/Berlin)"
    )
    assert created["timing_error"] is None
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["timing_error"] is None
    assert len(fixed.json()["next_fires"]) == 5


async def test_label_schedules_are_listed_and_can_only_be_paused(
    make_settings: Callable[..., Settings],
) -> None:
    """Label schedules show up; editing or deleting them is 409; pause/resume work."""
    async with serve_app(await _app(make_settings)) as client:
        labels = (await client.get("/v1/schedules?source=label")).json()["items"]
        health = next(s for s in labels if s["task"] == "check_system_health")
        path = f"/v1/schedules/{health['id']}"
        edit = await client.patch(path, json={"schedule": cron("0 * * * *", "UTC")})
        delete = await client.delete(path)
        paused = await client.patch(path, json={"enabled": False, "paused_note": "noisy"})
        resumed = await client.patch(path, json={"enabled": True})
    assert health["schedule"]["cron"] == "*/5 * * * *"
    assert health["name"] == "check_system_health"
    assert edit.status_code == 409
    assert "can only be paused or resumed" in edit.json()["detail"]
    assert delete.status_code == 409
    assert paused.json()["enabled"] is False
    assert paused.json()["paused_note"] == "noisy"
    assert paused.json()["next_fires"] == []
    assert resumed.json()["enabled"] is True
    assert len(resumed.json()["next_fires"]) == 5


async def test_edit_trigger_and_delete(make_settings: Callable[..., Settings]) -> None:
    """PATCH changes timing from now; trigger runs at once; DELETE removes (history stays)."""
    async with serve_app(await _app(make_settings)) as client:
        created = (await create(client, schedule=cron())).json()
        path = f"/v1/schedules/{created['id']}"
        edited = (
            await client.patch(
                path,
                json={
                    "schedule": {"type": "interval", "seconds": 60},
                    "kwargs": {"items": ["x", "y"]},
                },
            )
        ).json()
        triggered = await client.post(f"{path}/trigger")
        run_id = triggered.json()["run_id"]
        run: dict[str, Any] = {}
        for _ in range(100):
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] == "succeeded":
                break
            await asyncio.sleep(0.02)
        detail = (await client.get(path)).json()
        deleted = await client.delete(path)
        gone = await client.get(path)
        history = await client.get(f"/v1/runs/{run_id}")
    assert edited["schedule"]["seconds"] == 60
    assert edited["kwargs"] == {"items": ["x", "y"]}
    assert triggered.status_code == 202
    assert run["status"] == "succeeded"
    assert (run["source"], run["schedule_id"]) == ("schedule", created["id"])
    assert run["summary"] == {"processed": 2, "errors": 0}
    assert [r["run_id"] for r in detail["recent_runs"]] == [run_id]
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert history.status_code == 200


async def test_a_deleted_schedules_id_is_not_given_to_the_next_one(
    make_settings: Callable[..., Settings],
) -> None:
    """A schedule created after the newest one was deleted gets a new id, so it does
    not inherit the deleted schedule's runs (they keep its id) or its audit entries."""
    async with serve_app(await _app(make_settings)) as client:
        first = (await create(client, schedule=cron())).json()
        run_id = (await client.post(f"/v1/schedules/{first['id']}/trigger")).json()["run_id"]
        for _ in range(100):
            if (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded":
                break
            await asyncio.sleep(0.02)
        deleted = await client.delete(f"/v1/schedules/{first['id']}")
        second = (await create(client, schedule=cron())).json()
        detail = (await client.get(f"/v1/schedules/{second['id']}")).json()
    assert deleted.status_code == 204
    assert second["id"] > first["id"]
    assert detail["recent_runs"] == []


async def test_a_triggered_run_is_delivered_like_a_fire(
    make_settings: Callable[..., Settings],
) -> None:
    """Trigger gives the run the schedule's deliver_to, and its result is delivered."""
    async with serve_app(await _app(make_settings)) as client:
        created = (await create(client, schedule=cron(), deliver_to={"email": ["a@b.c"]})).json()
        triggered = await client.post(f"/v1/schedules/{created['id']}/trigger")
        run_id = triggered.json()["run_id"]
        run: dict[str, Any] = {}
        for _ in range(100):
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] == "succeeded" and run["deliveries"]:
                break
            await asyncio.sleep(0.02)
    assert run["deliver_to"] == created["deliver_to"]
    assert [d["channel"] for d in run["deliveries"]] == ["email"]


async def test_schedules_need_scopes(make_settings: Callable[..., Settings]) -> None:
    """Reading needs read; creating needs operate."""
    import hashlib  # noqa: PLC0415

    key = {"name": "ro", "sha256": hashlib.sha256(b"ro-key").hexdigest(), "scopes": ["read"]}
    app = create_app(make_settings(api_keys=[key]), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        headers = {"Authorization": "Bearer ro-key"}
        listed = await client.get("/v1/schedules", headers=headers)
        created = await client.post(
            "/v1/schedules",
            headers=headers,
            json={"name": "x", "task": "count_items", "kwargs": {"items": []}, "schedule": cron()},
        )
        anonymous = await client.get("/v1/schedules")
    assert listed.status_code == 200
    assert created.status_code == 403
    assert anonymous.status_code == 401


async def test_a_key_without_read_learns_only_what_its_change_did(
    make_settings: Callable[..., Settings],
) -> None:
    """An operate-only key may pause and edit a schedule but not GET it: its PATCH
    answer is the schedule's id and the fields it set, never the kwargs, delivery
    targets or recent runs (their kwargs, summaries and errors); a key with read and
    operate still gets the whole schedule."""
    import hashlib  # noqa: PLC0415

    keys = [
        {"name": name, "sha256": hashlib.sha256(key).hexdigest(), "scopes": scopes}
        for name, key, scopes in (
            ("op", b"op-key", ["operate"]),
            ("rw", b"rw-key", ["read", "operate"]),
        )
    ]
    app = create_app(make_settings(api_keys=keys), broker=broker, embedded=True, scheduler=False)
    operate_only, read_write = (
        {"Authorization": "Bearer op-key"},
        {"Authorization": "Bearer rw-key"},
    )
    async with serve_app(app) as client:
        created = await create(
            client,
            name="nightly",
            kwargs={"items": ["secret"]},
            schedule=cron(),
            headers=read_write,
        )
        path = created.headers["location"]
        await client.post(f"{path}/trigger", headers=read_write)
        await broker.wait_all()  # type: ignore[attr-defined]
        await app.state.runtime.recorder.wait_flushed()
        refused = await client.get(path, headers=operate_only)
        paused = await client.patch(
            path, json={"enabled": False, "paused_note": "maintenance"}, headers=operate_only
        )
        resumed = await client.patch(path, json={"enabled": True}, headers=read_write)
    assert refused.status_code == 403
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"id": created.json()["id"], "changed": ["enabled", "paused_note"]}
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["kwargs"] == {"items": ["secret"]}
    assert resumed.json()["enabled"] is True
    assert [run["kwargs"] for run in resumed.json()["recent_runs"]] == [{"items": ["secret"]}]


async def test_an_empty_patch_is_422_as_it_changes_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """``PATCH`` with ``{}`` is a mistake, not a no-op: 422 saying there is nothing to
    change, and the schedule stays as it was."""
    async with serve_app(await _app(make_settings)) as client:
        created = (await create(client, schedule=cron())).json()
        path = f"/v1/schedules/{created['id']}"
        empty = await client.patch(path, json={})
        unchanged = (await client.get(path)).json()
    assert empty.status_code == 422, empty.text
    assert empty.json()["type"] == "urn:jobs-service:problem:invalid-request"
    assert "nothing to change" in empty.json()["detail"]
    assert unchanged["updated_at"] == created["updated_at"]


async def test_patch_refuses_null_for_required_fields(
    make_settings: Callable[..., Settings],
) -> None:
    """Setting name, overlap or the timing to null is a 422, not a conflict or a 500."""
    async with serve_app(await _app(make_settings)) as client:
        created = (await create(client, schedule=cron())).json()
        path = f"/v1/schedules/{created['id']}"
        responses = [
            await client.patch(path, json={field: None})
            for field in ("name", "overlap", "schedule", "catchup_window_s")
        ]
        unchanged = (await client.get(path)).json()
    assert [r.status_code for r in responses] == [422, 422, 422, 422]
    assert "not set to null" in responses[0].text
    assert unchanged["name"] == created["name"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "nightly\x00"),
        ("description", "d\x00"),
        ("paused_note", "maintenance\x00"),
        ("deliver_to", {"email": {"to": ["ops@example.com"], "subject": "KPIs\x00"}}),
        ("deliver_to", {"email": ["ops\x00@example.com"]}),
        ("deliver_to", {"calendar": {"subject": "review\x00"}}),
    ],
)
async def test_text_a_database_cannot_store_is_422_on_create_and_patch(
    make_settings: Callable[..., Settings], field: str, value: Any
) -> None:
    """A NUL character in a schedule's name, description, paused note or delivery
    targets is refused like one in its kwargs: 422 naming the field, nothing stored or
    changed (PostgreSQL would otherwise fail the write with a 500)."""
    async with serve_app(await _app(make_settings)) as client:
        created = (await create(client, name="kept", schedule=cron())).json()
        path = f"/v1/schedules/{created['id']}"
        answers = [await client.patch(path, json={field: value})]
        if field != "paused_note":  # not a field of a new schedule
            body = {"name": "new", "task": "count_items", "kwargs": {"items": []}}
            body |= {"schedule": cron(), field: value}
            answers.append(await client.post("/v1/schedules", json=body))
        listed = (await client.get("/v1/schedules?source=api")).json()["items"]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert field in problem["detail"]
        assert "text must not contain NUL characters" in {e["msg"] for e in problem["errors"]}
    assert [(s["name"], s["description"], s["paused_note"]) for s in listed] == [
        ("kept", None, None)
    ]


async def test_a_new_deliver_to_reaches_the_fires_of_a_task_that_delivers_itself(
    make_settings: Callable[..., Settings],
) -> None:
    """``run_agent_task`` takes ``deliver_to`` as an argument, so the schedule keeps a
    copy in its kwargs: a PATCH must replace that copy (a fire prefers it), and
    ``null`` must stop delivery. Before this was fixed both kept the old address."""
    async with serve_app(await _app(make_settings)) as client:
        created = (
            await create(
                client,
                task="run_agent_task",
                kwargs={"agent": "kpi"},
                schedule=cron(),
                deliver_to={"email": ["old@example.com"]},
            )
        ).json()
        url = f"/v1/schedules/{created['id']}"
        moved = (
            await client.patch(url, json={"deliver_to": {"email": ["new@example.com"]}})
        ).json()
        run_id = (await client.post(f"{url}/trigger")).json()["run_id"]
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        stopped = (await client.patch(url, json={"deliver_to": None})).json()
        quiet_id = (await client.post(f"{url}/trigger")).json()["run_id"]
        quiet = (await client.get(f"/v1/runs/{quiet_id}")).json()
    assert created["kwargs"]["deliver_to"]["email"]["to"] == ["old@example.com"]
    assert moved["deliver_to"]["email"]["to"] == ["new@example.com"]
    assert moved["kwargs"]["deliver_to"] == moved["deliver_to"]
    assert run["kwargs"]["deliver_to"]["email"]["to"] == ["new@example.com"]
    assert stopped["deliver_to"] is None
    assert "deliver_to" not in stopped["kwargs"] or stopped["kwargs"]["deliver_to"] is None
    assert quiet["kwargs"].get("deliver_to") is None
    assert quiet["deliver_to"] is None
