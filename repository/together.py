"""Awaitables run at once, none left behind when one fails.

``asyncio.gather`` alone lets the others run on after the first failure (and ``TaskGroup`` wraps
what they raise in an ``ExceptionGroup``, which would change the errors callers catch): here the
first failure, or a cancel from outside, cancels the rest and waits for them to end before it
goes on as it came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def together(*work: Awaitable[Any]) -> list[Any]:
    """What each of ``work`` answers, in order, once all have ended well."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
