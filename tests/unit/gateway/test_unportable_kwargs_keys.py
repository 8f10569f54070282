"""A kwargs key the stores would refuse is a 422, like a value, not a crash.

A lone surrogate *value* is refused with a 422 ``invalid-kwargs``. The same character in
a *key* is found by the same check and put into the problem's ``detail`` and
``errors[].loc``: the document has no UTF-8 form, and rendering it used to raise, which
left the caller a bare ``500 Internal Server Error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from tests.conftest import serve_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

# JSON escapes: a lone surrogate as a value, then as a key.
AS_VALUE = '{"kwargs": {"agent": "crm/score", "payload": {"note": "\\ud800"}}}'
AS_KEY = '{"kwargs": {"agent": "crm/score", "payload": {"\\ud800": 1}}}'
BATCH_KEY = '{"items": [{"kwargs": {"agent": "crm/score", "payload": {"\\ud800": 1}}}]}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tasks/run_agent_task", AS_VALUE),
        ("/v1/tasks/run_agent_task", AS_KEY),
        ("/v1/tasks/run_agent_task/batch", BATCH_KEY),
    ],
    ids=["value", "key", "batch-key"],
)
async def test_a_lone_surrogate_in_kwargs_is_a_422(
    make_settings: Callable[..., Settings],
    path: str,
    body: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(), broker=broker, embedded=True, scheduler=False)
    async with serve_app(app) as client:
        crashed = None
        try:
            response = await client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
        except Exception as exc:  # noqa: BLE001 - what a server turns into a bare 500
            crashed = f"{type(exc).__name__}: {exc}"
    # What was logged holds the unencodable key: drop it, so the report can be sent
    # (pytest-xdist cannot send a report holding a lone surrogate).
    capfd.readouterr()
    caplog.clear()
    if crashed is not None:
        pytest.fail(f"the request crashed the app ({crashed}): a bare 500 for the caller")
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:jobs-service:problem:invalid-kwargs"
    assert problem["errors"][0]["loc"][-1] in ("note", "\ud800")
