"""``repository.together``: awaitables run at once, none left running when one fails."""

from __future__ import annotations

import asyncio

import pytest

from repository.together import together


async def test_answers_come_in_order_and_none_is_nothing() -> None:
    async def answer(value: int) -> int:
        await asyncio.sleep(0)
        return value

    assert await together() == []
    assert await together(answer(1), answer(2), answer(3)) == [1, 2, 3]


async def test_the_first_failure_stops_the_rest_and_goes_on_as_it_came() -> None:
    stopped = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    async def fails() -> None:
        await asyncio.sleep(0)
        raise LookupError("the first failure")

    with pytest.raises(LookupError, match="the first failure"):  # itself, not in an ExceptionGroup
        await together(waits(), fails(), waits())
    assert stopped.is_set()


async def test_a_cancel_from_outside_stops_every_one() -> None:
    started, stopped = asyncio.Event(), []

    async def waits(i: int) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(i)
            raise

    outer = asyncio.ensure_future(together(waits(1), waits(2)))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert sorted(stopped) == [1, 2]
