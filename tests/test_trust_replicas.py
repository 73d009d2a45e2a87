"""Replicas of an edge share which keys they trust and the keys themselves: each has a GnuPG home
of its own (its data directory), and the key material travels through the shared database
(edge/key_material.py). Here two ``TrustedKeys`` with their own homes share one database, on
either engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.key_material import KeyMaterial
from edge.schema import edge_migrations
from edge.store import EdgeStore
from edge.trust import TrustedKeys
from repository.db import Database
from repository.errors import Conflict
from repository.schema import catalog_migrations
from tests.gpg_keys import KeyFactory, KeySet
from wire.signatures import SignatureRefused


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, edge_migrations)
    try:
        yield db
    finally:
        await db.close()


async def _replica(database: Database, home: Path) -> TrustedKeys:
    home.mkdir(mode=0o700)
    return await TrustedKeys.open(home, EdgeStore(database))


def _signed(tmp_path: Path, key_factory: KeyFactory, keys: KeySet) -> tuple[Path, str]:
    data = tmp_path / "manifest"
    data.write_bytes(b"the bytes of a manifest")
    return data, key_factory.sign(keys.alice, data.read_bytes()).decode()


async def test_a_key_trusted_through_one_replica_verifies_on_another(
    database: Database, tmp_path: Path, key_factory: KeyFactory, keys: KeySet
) -> None:
    one, two = await _replica(database, tmp_path / "one"), await _replica(database, tmp_path / "two")
    data, signature = _signed(tmp_path, key_factory, keys)
    with pytest.raises(SignatureRefused):
        await two.verify(data, signature)
    await one.trust("dist-main", keys.alice.public)
    assert await two.verify(data, signature) == keys.alice.fingerprint
    await one.remove("dist-main")
    with pytest.raises(SignatureRefused):  # the alias table decides, whatever a home still holds
        await two.verify(data, signature)
    await one.close()
    await two.close()


async def test_a_key_trusted_before_replicas_existed_is_shared_when_its_edge_starts(
    database: Database, tmp_path: Path, key_factory: KeyFactory, keys: KeySet
) -> None:
    one = await _replica(database, tmp_path / "one")
    await one.trust("dist-main", keys.alice.public)
    await database.run(lambda: database.db.execute("DELETE FROM trusted_key_material"))  # as an older edge kept it
    await one.close()
    one = await TrustedKeys.open(tmp_path / "one", EdgeStore(database))  # the edge starts again
    two = await _replica(database, tmp_path / "two")
    data, signature = _signed(tmp_path, key_factory, keys)
    assert await two.verify(data, signature) == keys.alice.fingerprint
    await one.close()
    await two.close()


async def test_replicas_trusting_one_alias_at_once_record_it_once_and_refuse_another_key_under_it(
    database: Database, tmp_path: Path, keys: KeySet
) -> None:
    one, two = await _replica(database, tmp_path / "one"), await _replica(database, tmp_path / "two")
    same = await asyncio.gather(one.trust("dist-main", keys.alice.public), two.trust("dist-main", keys.alice.public))
    assert sorted(t.created for t in same) == [False, True] and same[0].key == same[1].key
    other = await asyncio.gather(
        one.trust("dist-next", keys.alice.public), two.trust("dist-next", keys.bob.public), return_exceptions=True
    )
    refused = [answer for answer in other if isinstance(answer, Conflict)]
    assert len(refused) == 1 and refused[0].status == 409
    winner = next(answer for answer in other if not isinstance(answer, BaseException))
    assert [(k.alias, k.fingerprint) for k in await one.list()] == [
        ("dist-main", keys.alice.fingerprint),
        ("dist-next", winner.key.fingerprint),
    ]
    held = await KeyMaterial(database).get([keys.alice.fingerprint, keys.bob.fingerprint])
    assert sorted(held) == sorted({keys.alice.fingerprint, winner.key.fingerprint})  # none for the refused key
    await one.close()
    await two.close()
