"""Opening files in a worker thread without leaking them when the caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import IO, Any


async def open_in_thread(opener: Callable[..., IO[Any]], *args: Any) -> IO[Any]:
    """``opener(*args)`` in a worker thread, answering the open file.

    ``await asyncio.to_thread(open, ...)`` leaks a descriptor when the awaiting task is cancelled
    while the thread is still opening (a client that goes away, a job that fails and cancels its
    other uploads): the thread finishes, and the file it opened belongs to no one. Here the file
    opened after a cancellation is closed as soon as the thread hands it over.
    """
    opening = asyncio.ensure_future(asyncio.to_thread(opener, *args))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _close_opened(opening: asyncio.Future[IO[Any]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
