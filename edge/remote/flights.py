"""Single flight: concurrent callers asking for one key share one run of the work.

Twenty clients missing the same file at once cause one upstream fetch; each waits for
the same task. The task is shielded from its waiters, so a client that goes away does
not cancel the fetch the others wait for. Per process: other workers of the node run
their own flights and meet in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}

    def join(self, key: K, start: Callable[[], Awaitable[T]]) -> tuple[asyncio.Task[T], bool]:
        """The task running for ``key``, started now if none is; and whether this call started it."""
        task = self._running.get(key)
        if task is not None:
            return task, False
        task = asyncio.ensure_future(start())
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return task, True

    async def run(self, key: K, start: Callable[[], Awaitable[T]]) -> T:
        task, _ = self.join(key, start)
        return await asyncio.shield(task)

    def running(self) -> int:
        return len(self._running)

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waited for is not logged as lost
