"""Task results in Redis, written in the same round trip as the acknowledgement.

TaskIQ's Redis result backend writes each result with its own SET, one round trip per
task. :class:`PipelinedResultBackend` keeps its format, keys and expiry (so TaskIQ's
``wait_result`` and ``get_result`` read them as before) and adds :meth:`entry`, which
encodes a result for the receiver to hand to the batched completions instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq_redis import RedisAsyncResultBackend

from jobs_service.infrastructure.wire import result_document

if TYPE_CHECKING:
    from taskiq import TaskiqResult

    from jobs_service.infrastructure.completions import ResultEntry

__all__ = ["PipelinedResultBackend"]


class PipelinedResultBackend(RedisAsyncResultBackend[Any]):
    """TaskIQ's Redis result backend whose writes can join another pipeline."""

    def entry(self, task_id: str, result: TaskiqResult[Any]) -> ResultEntry:
        """Key, encoded value and time to live (seconds) of ``result``, as
        ``set_result`` would write them."""
        value = self.serializer.dumpb(result_document(result))
        ttl_s = self.result_ex_time
        if ttl_s is None and self.result_px_time:
            ttl_s = max(1, self.result_px_time // 1000)
        return self._task_name(task_id), value, ttl_s
