"""Comparing JSON documents as JSON, whatever the store did to their numbers.

A document read back from PostgreSQL's ``jsonb`` is not always the one written: numbers
become ``numeric``, so ``1e16`` comes back as ``10000000000000000`` (an ``int``) and
``-0.0`` as ``0.0``. Compared as encoded text, or as Python values where ``True == 1``,
two documents can then differ that JSON says are equal, or match that it says differ.
"""

from __future__ import annotations

from typing import Any

__all__ = ["json_equal"]


def json_equal(left: Any, right: Any) -> bool:
    """Whether two JSON values (``dict``, ``list``/``tuple``, ``str``, ``int``,
    ``float``, ``bool``, ``None``) are the same JSON value.

    Numbers are equal by value (``10**16`` and ``1e16``, ``-0.0`` and ``0.0``, ``1``
    and ``1.0``); a boolean is never a number (``true`` is not ``1``), nor a string a
    number (``"1"`` is not ``1``); object keys are unordered, arrays ordered.
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            json_equal(value, right[key]) for key, value in left.items()
        )
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    return type(left) is type(right) and left == right
