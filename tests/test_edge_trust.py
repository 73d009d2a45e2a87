"""Trusted signing keys on an edge: added by alias, listed, removed, and what removal means for bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from tests.access_http import push_bundle
from tests.conftest import admin, error_of
from tests.edge_setup import download
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import FILES, TX, commit, manifest_of, put_blob, signed, start, token

KEYS = "/artifactory/api/security/keys/trusted"


async def add(client: Any, alias: str, public_key: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post(KEYS, json={"alias": alias, "public_key": public_key}, headers=headers or admin())


async def test_a_trusted_key_is_added_once_by_alias_listed_and_removed(edge: Any, keys: KeySet) -> None:
    first = await add(edge, "dist-main", keys.alice.public)
    assert first.status == 201
    assert await first.json() == {"alias": "dist-main", "fingerprint": keys.alice.fingerprint}
    again = await add(edge, "dist-main", keys.alice.public)
    assert again.status == 200 and (await again.json())["fingerprint"] == keys.alice.fingerprint
    listed = (await (await edge.get(KEYS, headers=admin())).json())["keys"]
    assert [(k["alias"], k["fingerprint"]) for k in listed] == [("dist-main", keys.alice.fingerprint)]
    assert listed[0]["created"].endswith("Z")
    assert (await edge.delete(f"{KEYS}/dist-main", headers=admin())).status == 204
    assert (await (await edge.get(KEYS, headers=admin())).json())["keys"] == []
    assert (await error_of(await edge.delete(f"{KEYS}/dist-main", headers=admin())))[0] == 404


async def test_an_alias_naming_another_key_is_a_409(edge: Any, keys: KeySet) -> None:
    assert (await add(edge, "dist-main", keys.alice.public)).status == 201
    assert (await error_of(await add(edge, "dist-main", keys.bob.public)))[0] == 409


@pytest.mark.parametrize("what", ["private", "garbage", "two-keys", "bad-alias", "not-a-string"])
async def test_anything_but_exactly_one_public_key_under_a_valid_alias_is_a_400(
    edge: Any, keys: KeySet, what: str
) -> None:
    alias, material = (
        "dist-main",
        {
            "private": keys.alice.private,
            "garbage": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "two-keys": keys.alice.public + keys.bob.public,
            "bad-alias": keys.alice.public,
            "not-a-string": keys.alice.public,
        }[what],
    )
    if what == "bad-alias":
        alias = "../etc"
    body: dict[str, Any] = {"alias": alias, "public_key": material}
    if what == "not-a-string":
        body["public_key"] = [material]
    resp = await edge.post(KEYS, json=body, headers=admin())
    assert (await error_of(resp))[0] == 400
    assert (await (await edge.get(KEYS, headers=admin())).json())["keys"] == []


async def test_only_an_admin_manages_trusted_keys(edge: Any, keys: KeySet) -> None:
    distributor = await token(edge, "distributor")
    assert (await add(edge, "a", keys.alice.public, distributor)).status == 403
    assert (await edge.post(KEYS, json={"alias": "a", "public_key": keys.alice.public})).status == 401
    assert (await add(edge, "a", keys.alice.public)).status == 201
    assert (await edge.delete(f"{KEYS}/a", headers=distributor)).status == 403
    assert (await edge.get(KEYS, headers=distributor)).status == 200
    assert (await edge.get(KEYS, headers=await token(edge, "reader"))).status == 403


async def test_during_key_rotation_both_keys_are_accepted_and_a_removed_key_is_refused_after(
    edge: Any, keys: KeySet, key_factory: KeyFactory
) -> None:
    await add(edge, "old", keys.alice.public)
    await add(edge, "new", keys.bob.public)
    dist = await token(edge, "distributor")
    by_alice = signed(key_factory, keys.alice, manifest_of(FILES, version="1.0.0"))
    open_by_alice = await start(edge, by_alice, dist)
    for data in FILES.values():
        await put_blob(edge, open_by_alice["transaction_id"], data, dist)
    await start(edge, signed(key_factory, keys.bob, manifest_of(FILES, version="2.0.0")), dist)
    assert (await edge.delete(f"{KEYS}/old", headers=admin())).status == 204
    later = signed(key_factory, keys.alice, manifest_of(FILES, version="3.0.0"))
    status, message = await error_of(await edge.post(TX, json=later, headers=dist))
    assert status == 422 and "not trust" in message
    # a transaction its key opened cannot be committed once the key is gone
    refused = await edge.post(f"{TX}/{open_by_alice['transaction_id']}/commit", headers=dist)
    assert (await error_of(refused))[0] == 422
    assert (await edge.get("/artifactory/releases-local/app/1.0.0/README.md")).status == 404
    await start(edge, signed(key_factory, keys.bob, manifest_of(FILES, version="4.0.0")), dist)
    await add(edge, "old", keys.alice.public)  # trusted again: accepted again
    assert (await commit(edge, open_by_alice["transaction_id"], dist))["state"] == "COMMITTED"


async def test_one_key_under_two_aliases_stays_trusted_until_both_are_removed(
    edge: Any, keys: KeySet, key_factory: KeyFactory
) -> None:
    await add(edge, "one", keys.alice.public)
    await add(edge, "two", keys.alice.public)
    dist = await token(edge, "distributor")
    await edge.delete(f"{KEYS}/one", headers=admin())
    await start(edge, signed(key_factory, keys.alice, manifest_of(FILES, version="1")), dist)
    await edge.delete(f"{KEYS}/two", headers=admin())
    refused = await edge.post(TX, json=signed(key_factory, keys.alice, manifest_of(FILES, version="2")), headers=dist)
    assert (await error_of(refused))[0] == 422


def edge_cli(edge: EdgeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "edge"), *args, "--url", edge.url, "--token", edge.admin_token]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


def test_the_edge_cli_deletes_a_bundle_bigger_than_one_removal_step_whole(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    files = {f"releases-local/app/2.0/f{i}.bin": f"file {i}\n".encode() for i in range(5)}
    with EdgeProcess(tmp_path / "edge", env={"EDGE_REMOVAL_FILES_PER_REQUEST": "2"}) as edge:
        push_bundle(edge, key_factory, keys.alice, "app", "2.0", files)
        command = [str(Path(sys.executable).parent / "edge"), "bundles", "delete", "app", "2.0"]
        command += ["--url", edge.url, "--token", edge.admin_token]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        deleted = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert "removing app 2.0: 2/5 files" in deleted.stderr and "4/5 files" in deleted.stderr
        assert "deleted app 2.0" in deleted.stderr
        assert [download(edge.url, target)[0] for target in files] == [404] * len(files)


def test_the_edge_cli_trusts_lists_and_removes_keys_and_lists_bundles(
    edge_server: EdgeProcess, keys: KeySet, tmp_path: Path
) -> None:
    public = tmp_path / "dist-public.asc"
    public.write_text(keys.alice.public)
    trusted = edge_cli(edge_server, "keys", "trust", str(public), "--alias", "dist-main")
    assert trusted.returncode == 0, trusted.stderr
    assert keys.alice.fingerprint in trusted.stderr
    listed = edge_cli(edge_server, "keys", "list")
    assert [json.loads(line)["alias"] for line in listed.stdout.splitlines()] == ["dist-main"]
    assert edge_cli(edge_server, "bundles", "list").stdout == ""
    assert edge_cli(edge_server, "keys", "remove", "dist-main").returncode == 0
    missing = edge_cli(edge_server, "keys", "remove", "dist-main")
    assert missing.returncode != 0 and "404" in missing.stderr


def test_the_edge_cli_deletes_a_bundle_and_says_so_when_there_is_none(
    edge_server: EdgeProcess, keys: KeySet, key_factory: KeyFactory
) -> None:
    target = "releases-local/app/1.4.0/app.tar.gz"
    push_bundle(edge_server, key_factory, keys.alice, "app", "1.4.0", {target: b"the app " * 100})
    listed = edge_cli(edge_server, "bundles", "list")
    assert [(b["name"], b["version"]) for b in map(json.loads, listed.stdout.splitlines())] == [("app", "1.4.0")]
    deleted = edge_cli(edge_server, "bundles", "delete", "app", "1.4.0")
    assert deleted.returncode == 0 and "deleted app 1.4.0" in deleted.stderr, deleted.stderr
    assert edge_cli(edge_server, "bundles", "list").stdout == ""
    assert download(edge_server.url, target)[0] == 404
    again = edge_cli(edge_server, "bundles", "delete", "app", "1.4.0")
    assert again.returncode != 0 and "No release bundle app/1.4.0" in again.stderr, again.stderr
