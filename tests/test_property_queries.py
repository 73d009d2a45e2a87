"""Release bundles selected by property: AQL ``@key`` criteria as JFrog CLI sends them, and the
file spec's ``props``, through the service's API (a dry run answers what would be selected)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, admin

V1 = "/distribution/api/v1"
REPO = "releases-local"
BUILDS = {
    "app/1/app.tgz": "build=1;RC1-Approved=false;stage=qa",
    "app/2/app.tgz": "build=2;RC1-Approved=true;stage=qa,prod",
    "app/2/app.tgz.sha256": "build=2;RC1-Approved=true",
    "app/3/app.tgz": "build=3;stage=dev",
}


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    client = await aiohttp_client(create_app(settings))
    for path, props in BUILDS.items():
        resp = await client.put(f"/artifactory/{REPO}/{path}", data=path.encode(), headers=admin())
        assert resp.status == 201
        resp = await client.put(f"/artifactory/api/storage/{REPO}/{path}?properties={props}", headers=admin())
        assert resp.status == 204
    return client


async def selected(dist: Any, query: dict[str, Any]) -> list[str]:
    body = {"name": "app", "version": "1", "dry_run": True, "spec": {"queries": [query]}}
    resp = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert resp.status == 200, await resp.text()
    return sorted(a["sourceRepoPath"].removeprefix(f"{REPO}/") for a in (await resp.json())["artifacts"])


LABELLED = ["app/2/app.tgz", "app/2/app.tgz.sha256"]


@pytest.mark.parametrize(
    ("aql", "expected"),
    [
        ({"@RC1-Approved": "true"}, LABELLED),
        ({"@RC1-Approved": {"$eq": "true"}}, LABELLED),
        ({"$and": [{"repo": REPO}, {"@RC1-Approved": {"$eq": "true"}}, {"name": {"$match": "*.tgz"}}]}, LABELLED[:1]),
        ({"@stage": {"$match": "p*"}}, ["app/2/app.tgz"]),
        ({"@stage": {"$ne": "qa"}}, ["app/2/app.tgz.sha256", "app/3/app.tgz"]),
        ({"@stage": {"$nmatch": "*d*"}}, ["app/1/app.tgz", "app/2/app.tgz.sha256"]),
        ({"$or": [{"@build": "1"}, {"@build": "3"}]}, ["app/1/app.tgz", "app/3/app.tgz"]),
        ({"$and": [{"@build": "2"}, {"@stage": "prod"}]}, ["app/2/app.tgz"]),
        ({"repo": REPO, "@RC1-Approved": {"$match": "*"}}, ["app/1/app.tgz", *LABELLED]),
    ],
)
async def test_aql_property_criteria_select_the_labelled_files(dist: Any, aql: Any, expected: list[str]) -> None:
    assert await selected(dist, {"aql": f"items.find({json.dumps(aql)})"}) == expected


@pytest.mark.parametrize(
    ("pattern", "props", "expected"),
    [
        (f"{REPO}/app/**", "RC1-Approved=true", LABELLED),
        (f"{REPO}/app/**", "RC1-Approved=true;stage=prod", ["app/2/app.tgz"]),
        (f"{REPO}/app/**", "stage=dev,prod", ["app/2/app.tgz", "app/3/app.tgz"]),
        (f"{REPO}/app/1/*", "RC1-Approved=true", None),
    ],
)
async def test_a_file_spec_props_field_needs_every_listed_property(
    dist: Any, pattern: str, props: str, expected: list[str] | None
) -> None:
    if expected is not None:
        assert await selected(dist, {"pattern": pattern, "props": props}) == expected
        return
    body = {"name": "app", "version": "1", "spec": {"queries": [{"pattern": pattern, "props": props}]}}
    resp = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert (resp.status, (await resp.json())["message"]) == (400, "spec matches no artifacts")


def bundle_rows(tmp_path: Path) -> list[Any]:
    with sqlite3.connect(f"file:{tmp_path / 'dist' / 'catalog.db'}?mode=ro", uri=True) as db:
        return [db.execute(f"SELECT * FROM {t}").fetchall() for t in ("bundles", "bundle_artifacts", "bundle_staging")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"aql": 'items.find({"@RC1-Approved":{"$gte":"true"}})'}, "operator $gte is not supported"),
        ({"aql": 'items.find({"$and":[{"@a":{"$in":["1"]}}]})'}, "operator $in is not supported"),
        ({"pattern": f"{REPO}/app/**", "props": "=true"}, "a property key is empty"),
    ],
)
async def test_an_unknown_property_operator_is_refused_naming_it_and_nothing_is_created(
    dist: Any, tmp_path: Path, query: dict[str, Any], message: str
) -> None:
    before = bundle_rows(tmp_path)
    body = {"name": "app", "version": "1", "sign_immediately": True, "spec": {"queries": [query]}}
    resp = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    answer = await resp.json()
    assert resp.status == 400 and message in answer["message"], answer
    assert (await dist.get(f"{V1}/release_bundle/app/1", headers=admin())).status == 404
    assert bundle_rows(tmp_path) == before


async def test_a_bundle_carries_its_files_properties_into_the_signed_manifest(dist: Any) -> None:
    body = {
        "name": "app",
        "version": "2",
        "sign_immediately": True,
        "spec": {"queries": [{"aql": 'items.find({"@RC1-Approved":"true"})'}]},
    }
    resp = await dist.post(f"{V1}/release_bundle", json=body, headers=admin())
    assert resp.status == 201, await resp.text()
    got = await (await dist.get(f"{V1}/release_bundle/app/2", headers=admin())).json()
    props = {a["targetRepoPath"]: a["props"] for a in got["artifacts"]}
    assert props[f"{REPO}/app/2/app.tgz"] == [
        {"key": "RC1-Approved", "values": ["true"]},
        {"key": "build", "values": ["2"]},
        {"key": "stage", "values": ["qa", "prod"]},
    ]
