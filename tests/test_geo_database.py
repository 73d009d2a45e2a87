"""Country rules need a country database: rules that cannot work are refused, and readiness
says when the database an edge relies on is missing, unusable or stale.

Edges are the real app in process, with real MaxMind-format files written by mmdb-writer
(``tests/mmdb.py``), some of them backdated to look old.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.mmdb import write_mmdb
from edge.app import create_app
from edge.settings import AccessSettings, load_edge_settings
from repository.settings import SettingsError
from tests.conftest import admin, make_settings

RULES = "/artifactory/api/access/rules"
READINESS = "/artifactory/api/system/readiness"
DAY = 24 * 3600
MAX_AGE = 30
COUNTRY_RULES = {
    "a global allow list": [{"allow_countries": ["US"]}],
    "a global deny list": [{"deny_countries": ["KP"]}],
    "a per-repo rule": [{"repos": ["releases-*"], "deny_cidrs": ["203.0.113.0/24"], "allow_countries": ["US"]}],
    "one country rule among IP rules": [{"deny_cidrs": ["203.0.113.0/24"]}, {"repos": ["a"], "deny_countries": ["KP"]}],
}


async def edge_with(aiohttp_client: Any, tmp_path: Path, **access: Any) -> Any:
    return await aiohttp_client(create_app(make_settings(tmp_path, access=AccessSettings(**access))))


@pytest.mark.parametrize("rules", COUNTRY_RULES)
async def test_a_country_rule_on_an_edge_without_a_database_is_a_409_that_names_the_setting(
    aiohttp_client: Any, tmp_path: Path, rules: str
) -> None:
    edge = await edge_with(aiohttp_client, tmp_path)
    before = await (await edge.get(RULES, headers=admin())).json()
    resp = await edge.put(RULES, json={"rules": COUNTRY_RULES[rules]}, headers=admin())
    assert resp.status == 409
    (error,) = (await resp.json())["errors"]
    assert error["status"] == 409
    assert "access.geoip_database" in error["message"] and "nothing was changed" in error["message"]
    assert await (await edge.get(RULES, headers=admin())).json() == before


async def test_ip_rules_need_no_database_and_country_rules_are_taken_once_one_is_configured(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    edge = await edge_with(aiohttp_client, tmp_path / "plain")
    ip_only = [{"repos": ["releases-*"], "deny_cidrs": ["203.0.113.0/24"]}]
    assert (await edge.put(RULES, json={"rules": ip_only}, headers=admin())).status == 200
    # configured, even before its file arrives: the operator has said where countries come from
    geo = await edge_with(aiohttp_client, tmp_path / "geo", geoip_database=tmp_path / "not-yet.mmdb")
    resp = await geo.put(RULES, json={"rules": COUNTRY_RULES["a per-repo rule"]}, headers=admin())
    assert resp.status == 200
    assert (await resp.json())["rules"][0]["allow_countries"] == ["US"]


def test_settings_with_country_rules_and_no_database_stop_the_edge_at_start() -> None:
    env = {"EDGE_ACCESS_RULES": '[{"repos": ["releases-*"], "deny_countries": ["KP"]}]'}
    with pytest.raises(SettingsError, match=r"access\.rules.*access\.geoip_database"):
        load_edge_settings(env=env)
    assert load_edge_settings(env={**env, "EDGE_ACCESS_GEOIP_DATABASE": "/var/lib/geo.mmdb"}).access.rules


@pytest.mark.parametrize("days", [-1, 3651])
def test_the_maximum_age_of_the_database_is_a_checked_setting(days: int) -> None:
    with pytest.raises(SettingsError, match="access.geoip_max_age_days"):
        load_edge_settings(env={"EDGE_ACCESS_GEOIP_MAX_AGE_DAYS": str(days)})


async def readiness(edge: Any) -> tuple[int, dict[str, str]]:
    resp = await edge.get(READINESS)
    return resp.status, (await resp.json())["checks"]


async def test_readiness_has_no_geoip_check_where_countries_are_not_in_use(aiohttp_client: Any, tmp_path: Path) -> None:
    edge = await edge_with(aiohttp_client, tmp_path)
    assert await readiness(edge) == (200, {"database": "OK", "storage": "OK"})


async def test_readiness_fails_naming_geoip_while_the_configured_database_is_missing_then_recovers(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "GeoLite2-Country.mmdb"
    edge = await edge_with(aiohttp_client, tmp_path, geoip_database=path)
    assert await readiness(edge) == (503, {"database": "OK", "storage": "OK", "geoip": "FAILED"})
    write_mmdb(path)
    deadline = time.monotonic() + 30  # the edge looks at the file every second
    while (await readiness(edge))[0] != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await readiness(edge) == (200, {"database": "OK", "storage": "OK", "geoip": "OK"})


async def test_readiness_fails_on_a_corrupt_database(aiohttp_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "GeoLite2-Country.mmdb"
    path.write_bytes(b"\x00" * 64 + b"\xab\xcd\xefMaxMind.com" + b"\xff" * 64)
    edge = await edge_with(aiohttp_client, tmp_path, geoip_database=path)
    assert (await readiness(edge))[1]["geoip"] == "FAILED"


@pytest.mark.parametrize(
    ("age_days", "max_age", "result"),
    [
        (0, MAX_AGE, "OK"),
        (1, MAX_AGE, "OK"),
        (MAX_AGE - 1, MAX_AGE, "OK"),
        (MAX_AGE + 1, MAX_AGE, "FAILED"),
        (400, MAX_AGE, "FAILED"),
        (400, 0, "OK"),
    ],
)
async def test_a_database_older_than_its_maximum_age_is_stale_and_fails_readiness(
    aiohttp_client: Any, tmp_path: Path, age_days: int, max_age: int, result: str
) -> None:
    path = write_mmdb(tmp_path / "GeoLite2-Country.mmdb", built=int(time.time()) - age_days * DAY)
    edge = await edge_with(aiohttp_client, tmp_path, geoip_database=path, geoip_max_age_days=max_age)
    status, checks = await readiness(edge)
    assert (status, checks) == (200 if result == "OK" else 503, {"database": "OK", "storage": "OK", "geoip": result})


async def test_readiness_fails_while_country_rules_stored_earlier_are_in_force_without_a_database(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Rules stored through the API before country rules needed a database still load."""
    settings = make_settings(tmp_path, access=AccessSettings(geoip_database=tmp_path / "geo.mmdb"))
    write_mmdb(tmp_path / "geo.mmdb")
    first = await aiohttp_client(create_app(settings))
    assert (await first.put(RULES, json={"rules": COUNTRY_RULES["a per-repo rule"]}, headers=admin())).status == 200
    await first.close()
    edge = await aiohttp_client(create_app(make_settings(tmp_path)))  # same data dir, no database now
    assert await readiness(edge) == (503, {"database": "OK", "storage": "OK", "geoip": "FAILED"})
