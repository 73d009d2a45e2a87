"""The remote cache's bookkeeping alone: which files the bound evicts, and single flight."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.remote.config import MASK, RemoteConfig, parse_remote_config
from edge.remote.flights import SingleFlight
from edge.remote.lru import CachedFile, over_limit
from repository.errors import BadRequest


def _files(sizes: list[int]) -> list[CachedFile]:
    return [CachedFile("r", f"f{i}", size, last_used=i) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("limit", "evicted"),
    [(0, 3), (1, 3), (10 + 20 + 30 - 1, 1), (10 + 20 + 30, 0), (10 + 20 + 30 + 1, 0), (30, 2), (29, 3)],
)
def test_the_bound_evicts_least_recently_used_files_until_the_rest_fit(limit: int, evicted: int) -> None:
    files = _files([10, 20, 30])
    assert over_limit(files, limit) == files[:evicted]


@given(st.lists(st.integers(0, 1000), max_size=30), st.integers(0, 30_000))
def test_what_the_bound_keeps_fits_and_is_the_most_recently_used(sizes: list[int], limit: int) -> None:
    files = _files(sizes)
    victims = over_limit(files, limit)
    kept = files[len(victims) :]
    assert victims == files[: len(victims)]  # only the least recently used go
    assert sum(f.size for f in kept) <= limit or not kept
    if victims:  # none evicted needlessly: keeping the last victim too would not fit
        assert sum(f.size for f in kept) + victims[-1].size > limit


@given(st.integers(1, 40), st.integers(1, 5))
async def test_concurrent_callers_of_one_key_share_one_run(callers: int, keys: int) -> None:
    runs: list[int] = []
    flights: SingleFlight[int, int] = SingleFlight()
    release = asyncio.Event()

    async def work(key: int) -> int:
        runs.append(key)
        await release.wait()
        return key * 10

    waiting = [asyncio.ensure_future(flights.run(i % keys, lambda k=i % keys: work(k))) for i in range(callers)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting)

    assert sorted(runs) == sorted(set(i % keys for i in range(callers)))
    assert results == [(i % keys) * 10 for i in range(callers)]
    assert flights.running() == 0


async def test_a_caller_that_goes_away_does_not_cancel_the_run_the_others_wait_for() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.ensure_future(flights.run("k", work))
    second = asyncio.ensure_future(flights.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"


async def test_a_failed_run_fails_every_caller_and_the_next_call_runs_again() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("upstream down")
        return "ok"

    results = await asyncio.gather(flights.run("k", work), flights.run("k", work), return_exceptions=True)
    assert [str(r) for r in results] == ["upstream down", "upstream down"]
    assert await flights.run("k", work) == "ok"


def test_an_update_changes_only_the_fields_it_names_and_a_masked_password_keeps_the_stored_one() -> None:
    first = parse_remote_config("r", {"url": "https://up.example/artifactory/x", "password": "secret"})
    second = parse_remote_config("r", {"password": MASK, "offline": True}, first)
    assert second == RemoteConfig(
        key="r", url="https://up.example/artifactory/x", password="secret", offline=True, sync=first.sync
    )
    assert second.answer()["password"] == MASK
    with pytest.raises(BadRequest):
        parse_remote_config("r", {"retrievalCachePeriodSecs": True}, first)
