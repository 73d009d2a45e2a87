"""What the edge keeps of its users, permission targets, IP and geo rules and URL-signing keys,
on sqlite and on PostgreSQL alike: each change is in the database when the call returns, so
another process on the same database (a worker, a replica) loads exactly it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.access.rules import RuleBook, RuleSpec
from edge.access.signed_urls import public_pem
from edge.access.targets import TargetStore, parse_target
from edge.access.url_keys import UrlKeyring
from edge.access.users import UserStore
from edge.schema import edge_migrations
from repository.db import Database
from repository.errors import Conflict
from repository.permissions import Permissions
from repository.schema import catalog_migrations
from repository.tokens import Role


@pytest.fixture(name="replicas")
async def replicas_fixture(db_target: str, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two processes' connections to one database: what one stores, the other loads."""
    pair = (Database(db_target, local_dir=tmp_path / "one"), Database(db_target, local_dir=tmp_path / "two"))
    for db in pair:
        await db.open(catalog_migrations, edge_migrations)
    yield pair
    for db in pair:
        await db.close()


async def test_users_are_created_changed_and_deleted_for_every_process(replicas: tuple[Database, Database]) -> None:
    one, two = UserStore(replicas[0]), UserStore(replicas[1])
    await one.load()
    mona, created = await one.put("mona", role=Role.deployer, email="m@x.org", groups=("ops",), password="pw-mona-1")
    assert created
    changed, created = await one.put("mona", role=Role.reader, email="", groups=("ops", "qa"), password=None)
    assert not created and changed.password_hash == mona.password_hash
    await two.load()
    assert two.get("mona") == changed
    assert await two.authenticate("mona", "pw-mona-1") is not None
    assert await one.delete("mona")
    await two.load()
    assert two.list() == []


async def test_permission_targets_are_kept_and_replaced_for_every_process(
    replicas: tuple[Database, Database],
) -> None:
    one, two = TargetStore(replicas[0], Permissions()), TargetStore(replicas[1], Permissions())
    await one.load()
    body = {"repo": {"repositories": ["releases-local"], "actions": {"users": {"mona": ["read"]}}}}
    assert await one.put(parse_target("rel", body))
    wider = parse_target("rel", {"repo": {**body["repo"], "repositories": ["releases-local", "other"]}})
    assert not await one.put(wider)
    assert await one.put(parse_target("b", body))
    await two.load()
    assert [t.name for t in two.permissions.targets] == ["b", "rel"]
    assert two.get("rel") == wider
    assert await one.delete("rel")
    await two.load()
    assert [t.name for t in two.permissions.targets] == ["b"]


async def test_stored_rules_replace_the_settings_rules_for_every_process_until_reset(
    replicas: tuple[Database, Database],
) -> None:
    configured = (RuleSpec(deny_cidrs=("10.0.0.0/8",)),)
    one, two = (RuleBook(db, configured, "deny") for db in replicas)
    await one.load()
    assert one.stored is None
    rules = (RuleSpec(repos=("releases-*",), allow_cidrs=("192.0.2.0/24",)), RuleSpec(deny_countries=("XX",)))
    await one.replace(rules, by="admin")
    await one.replace(rules[:1], by="ops")
    await two.load()
    assert two.stored is not None and (two.stored.specs, two.stored.updated_by) == (rules[:1], "ops")
    await one.reset()
    await two.load()
    assert two.stored is None and two.current.specs == configured


async def test_url_signing_keys_made_trusted_and_removed_are_seen_by_every_process(
    replicas: tuple[Database, Database], tmp_path: Path
) -> None:
    one = UrlKeyring(replicas[0], tmp_path / "keys", (), "EdDSA")
    two = UrlKeyring(replicas[1], tmp_path / "keys", (), "EdDSA")  # one data dir: the private keys' files
    await one.open()
    first = one.signing_kid
    await two.open()
    assert two.signing_kid == first  # the key the first process made, not a second one
    newer = await one.rotate()
    partner = public_pem(Ed25519PrivateKey.generate().public_key())
    await one.trust("partner", partner)
    await two._load()
    assert two.signing_kid == newer.kid and {k.kid for k in two.known()} == {first, newer.kid, "partner"}
    await one.remove("partner")
    await two._load()
    assert {k.kid for k in two.known()} == {first, newer.kid}


async def test_a_key_trusted_by_two_processes_at_once_is_stored_once_and_a_different_one_is_a_conflict(
    replicas: tuple[Database, Database], tmp_path: Path
) -> None:
    """Neither process has loaded the other's change when it answers (another replica, or a
    worker before its next request): the database decides."""
    one = UrlKeyring(replicas[0], tmp_path / "keys", (), "EdDSA")
    two = UrlKeyring(replicas[1], tmp_path / "keys", (), "EdDSA")
    await one.open()
    await two.open()
    partner = public_pem(Ed25519PrivateKey.generate().public_key())
    key, created = await one.trust("partner", partner)
    assert created
    again, created = await two.trust("partner", partner)
    assert not created and again.public_pem == key.public_pem == partner
    stale = UrlKeyring(replicas[0], tmp_path / "keys", (), "EdDSA")  # has loaded nothing yet
    other = public_pem(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(Conflict, match="already exists"):
        await stale.trust("partner", other)
    await two._load()
    assert next(k for k in two.known() if k.kid == "partner").public_pem == partner
