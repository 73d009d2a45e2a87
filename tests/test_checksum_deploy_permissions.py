"""Copy by reference never bypasses read permission: a checksum deploy makes known bytes readable
at a new path only for a caller who may read them at some path already. Otherwise the answer is
byte for byte the one a checksum nobody has gets, so it tells nobody whether the bytes exist.

The other ways of making existing bytes readable somewhere new: there is no copy or move API
(``MOVE``/``COPY``/``POST`` on an item and ``api/copy``, ``api/move`` are refused, checked here),
and a bundle spec selects only what its creator may read (tests/test_bundle_immutability.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from repository.catalog import Repo
from repository.http import keys as core
from tests.conftest import UPLOADS, admin, error_of, upload
from tests.test_access_roles import basic, put_target, put_user, state

SECRET = b"a private build nobody but alice may read\n"
SHA256, SHA1, MD5 = (hashlib.new(a, SECRET).hexdigest() for a in ("sha256", "sha1", "md5"))
UNKNOWN = {"sha256": "e" * 64, "sha1": "e" * 40, "md5": "e" * 32}
# The three spellings of a checksum deploy: JFrog CLI's bare X-Checksum carries the sha256.
SPELLINGS = {
    "sha256": lambda d: {"X-Checksum-Sha256": d["sha256"]},
    "bare": lambda d: {"X-Checksum": d["sha256"]},
    "sha1": lambda d: {"X-Checksum-Sha1": d["sha1"]},
    "sha256+md5": lambda d: {"X-Checksum-Sha256": d["sha256"], "X-Checksum-Md5": d["md5"]},
}
PRIVATE = {"name": "private", "repo": {"repositories": ["releases-*", UPLOADS], "include-patterns": ["private/**"]}}


@pytest.fixture
async def edge_with_secret(edge: Any) -> Any:
    """Anonymously readable uploads; bob (deployer) may not read ``private/**``, in the uploads
    repo or in a bundle's repo, where the secret's bytes are; alice may."""
    await upload(edge, "private/secret.bin", SECRET)
    held = await edge.app[core.catalog].get_artifact(UPLOADS, "private/secret.bin")
    await edge.app[core.catalog].publish(
        [replace(held, repo="releases-local", path="private/app.bin", owner="bundle:app/1")],
        [Repo("releases-local", anonymous_read=False)],
    )
    await put_user(edge, "bob", role="deployer")
    await put_user(edge, "alice", role="deployer")
    await put_target(edge, PRIVATE | {"repo": PRIVATE["repo"] | {"actions": {"users": {"alice": ["read"]}}}})
    return edge


async def checksum_deploy(
    client: Any, path: str, caller: dict[str, str], digests: dict[str, str], spelling: str
) -> Any:
    headers = {**caller, "X-Checksum-Deploy": "true", **SPELLINGS[spelling](digests)}
    return await client.put(f"/artifactory/{UPLOADS}/{path}", headers=headers)


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_a_deployer_who_may_not_read_the_bytes_gets_exactly_the_answer_for_unknown_bytes(
    edge_with_secret: Any, spelling: str
) -> None:
    client = edge_with_secret
    before = await state(client)
    mine = {"sha256": SHA256, "sha1": SHA1, "md5": MD5}
    refused = await checksum_deploy(client, "pub/copy.bin", basic("bob"), mine, spelling)
    refused_body = await refused.read()
    unknown = await checksum_deploy(client, "pub/copy.bin", basic("bob"), UNKNOWN, spelling)
    assert (refused.status, refused_body) == (unknown.status, await unknown.read())
    assert refused.status == 404 and b"send the content" in refused_body
    assert await state(client) == before
    assert (await client.get(f"/artifactory/{UPLOADS}/pub/copy.bin")).status == 404


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_a_deployer_who_may_read_the_bytes_somewhere_deploys_them_by_checksum(
    edge_with_secret: Any, spelling: str
) -> None:
    client = edge_with_secret
    digests = {"sha256": SHA256, "sha1": SHA1, "md5": MD5}
    resp = await checksum_deploy(client, "pub/copy.bin", basic("alice"), digests, spelling)
    assert resp.status == 201, await resp.text()
    assert await (await client.get(f"/artifactory/{UPLOADS}/pub/copy.bin")).read() == SECRET


async def test_the_same_bytes_at_a_path_the_deployer_may_read_are_enough(edge_with_secret: Any) -> None:
    client = edge_with_secret
    await upload(client, "pub/same.bin", SECRET)  # the same bytes, where bob may read them
    resp = await checksum_deploy(client, "pub/copy.bin", basic("bob"), {"sha256": SHA256}, "sha256")
    assert resp.status == 201, await resp.text()
    assert await (await client.get(f"/artifactory/{UPLOADS}/pub/copy.bin")).read() == SECRET


async def test_an_admin_reads_everything_and_so_may_deploy_any_known_bytes(edge_with_secret: Any) -> None:
    resp = await checksum_deploy(edge_with_secret, "pub/copy.bin", admin(), {"sha1": SHA1}, "sha1")
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("MOVE", f"/artifactory/{UPLOADS}/private/secret.bin"),
        ("COPY", f"/artifactory/{UPLOADS}/private/secret.bin"),
        ("POST", f"/artifactory/api/copy/{UPLOADS}/private/secret.bin?to=/{UPLOADS}/pub/copy.bin"),
        ("POST", f"/artifactory/api/move/{UPLOADS}/private/secret.bin?to=/{UPLOADS}/pub/copy.bin"),
    ],
)
async def test_there_is_no_copy_or_move_that_could_publish_bytes_elsewhere(
    edge_with_secret: Any, method: str, path: str
) -> None:
    client = edge_with_secret
    before = await state(client)
    resp = await client.request(method, path, headers={**basic("bob"), "Destination": f"/{UPLOADS}/pub/copy.bin"})
    assert (await error_of(resp))[0] in (404, 405)
    assert await state(client) == before
