"""Values and errors as Redis clients give them: bytes without ``decode_responses``,
str with it; the exceptions that mean Redis could not be reached (as opposed to Redis
refusing a command)."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_UNREACHABLE", "redis_text"]

#: Redis is down, restarting or out of reach: worth retrying with backoff.
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def redis_text(value: object) -> str:
    """``value`` as text, whichever way the client was configured (numbers too)."""
    return value.decode() if isinstance(value, bytes) else str(value)
