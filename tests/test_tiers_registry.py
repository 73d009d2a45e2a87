"""Registering an edge under a parent (``edge add --via``): two tiers, no cycle, nothing stored
by a refusal, and a parent keeps its children from being orphaned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, admin

V1 = "/distribution/api/v1"


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN)
    return await aiohttp_client(create_app(settings))


def body(name: str, parent: str | None = None) -> dict[str, Any]:
    fields = {"name": name, "url": "http://127.0.0.1:1", "site_name": "s", "city_name": "c", "country_code": "US"}
    return fields | {"token": "t0k"} | ({"parent": parent} if parent is not None else {})


async def add(dist: Any, name: str, parent: str | None = None) -> tuple[int, dict[str, Any]]:
    resp = await dist.post(f"{V1}/edges", json=body(name, parent), headers=admin())
    return resp.status, await resp.json()


async def registered(dist: Any) -> dict[str, str | None]:
    return {e["name"]: e["parent"] for e in await (await dist.get(f"{V1}/edges", headers=admin())).json()}


async def test_an_edge_registered_via_a_parent_is_listed_with_it_and_a_retry_is_the_same_success(dist: Any) -> None:
    assert (await add(dist, "us-east-1"))[0] == 201
    status, child = await add(dist, "nyc-1", "us-east-1")
    assert status == 201 and child["parent"] == "us-east-1"
    assert (await add(dist, "nyc-1", "us-east-1"))[0] == 200
    status, answer = await add(dist, "nyc-1")  # the same name without the parent is another registration
    assert status == 409 and "nyc-1" in answer["message"]
    assert await registered(dist) == {"us-east-1": None, "nyc-1": "us-east-1"}


async def test_bad_parents_are_refused_with_the_reason_and_nothing_is_stored(dist: Any) -> None:
    assert (await add(dist, "us-east-1"))[0] == 201
    assert (await add(dist, "nyc-1", "us-east-1"))[0] == 201
    before = await registered(dist)
    refusals = [
        ("bos-1", "nowhere", 409, "Parent edge 'nowhere' is not registered"),
        ("loop-1", "loop-1", 409, "cannot relay to itself"),
        ("deep-1", "nyc-1", 409, "tiers are two deep"),
        ("bad-1", "has space", 400, "'parent' must be letters"),
        ("bad-2", "", 400, "'parent' is required: a non-empty string"),
    ]
    for name, parent, status, words in refusals:
        got, answer = await add(dist, name, parent)
        assert (got, answer["status_code"]) == (status, status), answer
        assert words in answer["message"]
    # a cycle: the parent registered again under its own child is another registration of it
    got, answer = await add(dist, "us-east-1", "nyc-1")
    assert got == 409 and "remove it first" in answer["message"]
    assert await registered(dist) == before


async def test_a_parent_with_children_cannot_be_removed_until_they_are(dist: Any) -> None:
    await add(dist, "us-east-1")
    await add(dist, "nyc-1", "us-east-1")
    await add(dist, "bos-1", "us-east-1")
    resp = await dist.delete(f"{V1}/edges/us-east-1", headers=admin())
    answer = await resp.json()
    assert resp.status == 409 and "relays to bos-1, nyc-1" in answer["message"]
    assert set(await registered(dist)) == {"us-east-1", "nyc-1", "bos-1"}
    for name in ("nyc-1", "bos-1", "us-east-1"):
        assert (await dist.delete(f"{V1}/edges/{name}", headers=admin())).status == 204
    assert await registered(dist) == {}
