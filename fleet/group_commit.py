"""Group commits: what arrives while one transaction commits waits for the next, which stores it all.

Devices call in thousands at a time (a fleet of 50,000 at a 30 s interval sends some 1,700
heartbeats a second; a rollout to 1,000 devices brings six reports from each within
seconds). A transaction each would wait for the disk that many times a second on the one
writer thread; a batch per transaction waits once. Every caller still returns only once
its own item is committed, with its own outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from repository.db import Database

log = logging.getLogger(__name__)

# Items stored in one transaction at most: a burst is cut in several commits so that none
# holds the writer for long.
MAX_BATCH = 2000

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """``submit`` returns an item's outcome once it is committed; ``run`` commits what waits, a
    batch per transaction, until cancelled (``group_commit_ctx``). Subclasses say how a batch
    is stored (``store``, on the writer thread): one outcome per item, or an exception for an
    item refused alone; an exception ``store`` raises fails the whole batch."""

    what = "items"  # for the log

    def __init__(self, database: Database) -> None:
        self._database = database
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()

    def store(self, items: list[Item]) -> list[Result | Exception]:
        raise NotImplementedError

    async def submit(self, item: Item) -> Result:
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        self._wake.set()
        return await done

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """One transaction for ``batch``; a failure fails its callers, and the next batch tries again."""
        try:
            outcomes = await self._database.run(self.store, [item for item, _ in batch])
        except asyncio.CancelledError as exc:  # shutting down
            _settle_all(batch, exc)
            raise
        except Exception as exc:
            log.error("storing %d %s failed: %s", len(batch), self.what, exc)
            _settle_all(batch, exc)
        else:
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():  # the caller went away meanwhile
                    continue
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)

    def fail_waiting(self) -> None:
        """On shutdown: callers still waiting are told their item was not stored."""
        _settle_all(self._waiting, ConnectionResetError("the service is stopping"))
        self._waiting.clear()


async def group_commit_ctx(writer: GroupCommit[Item, Result]) -> AsyncIterator[None]:
    """The writer's loop, from start-up to shutdown."""
    task = asyncio.create_task(writer.run(), name=f"fleet {writer.what} writer")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer.fail_waiting()


def _settle_all(waiting: list[tuple[Item, asyncio.Future[Result]]], exc: BaseException) -> None:
    for _, done in waiting:
        if done.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            done.cancel()
        else:
            done.set_exception(exc)
