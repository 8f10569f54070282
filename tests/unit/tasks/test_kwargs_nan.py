"""NaN and Infinity are refused anywhere in kwargs, not stored as null: inside a list, and
inside the tuples and sets a Python producer passes too."""

from __future__ import annotations

import math

import pytest

from jobs_service.broker import broker
from jobs_service.tasks.registry import InvalidKwargsError, find_task


@pytest.mark.parametrize(
    "value",
    [[float("nan")], (float("nan"),), (float("inf"), 1.0), {float("nan")}, frozenset({-math.inf})],
    ids=["list", "tuple", "inf", "set", "frozenset"],
)
def test_nan_anywhere_in_kwargs_is_refused(value: object) -> None:
    info = find_task(broker, "run_agent_task")
    with pytest.raises(InvalidKwargsError):
        info.validate_kwargs({"agent": "crm/score", "payload": {"scores": value}})
