"""The signing keys an edge trusts (the circle of trust), by alias.

Key material lives in a GnuPG home (``wire.signatures.TrustStore``); which
keys count is decided by the alias table: a signature is accepted only from a
fingerprint some alias names. So a key is trusted only once its alias is recorded,
and stops being trusted the moment its last alias is removed, even if removing it
from the GnuPG home failed. gpg calls block, so they run in a thread.

Replicas of an edge share the alias table but each has a GnuPG home of its own: the key
material is kept in the database as well (``edge/key_material.py``), and a replica imports a
trusted key its home lacks before it verifies a signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from repository.catalog import now_ms
from repository.disk_space import check_room
from repository.errors import BadRequest, Conflict, NotFound
from wire.signatures import SignatureRefused, TrustedKeyError, TrustStore

from .key_material import KeyMaterial
from .store import EdgeStore, KeyAlias

log = logging.getLogger(__name__)

ALIAS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Trusted:
    key: KeyAlias
    created: bool  # False: this alias already named this key (an idempotent repeat)


def check_alias(alias: object) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise BadRequest("'alias' must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return alias


class TrustedKeys:
    def __init__(self, store: TrustStore, edge_store: EdgeStore) -> None:
        self._store = store
        self._edge_store = edge_store
        self._material = KeyMaterial(edge_store.database)
        self._lock = edge_store.database.locks("trusted-keys")  # one change of the key set at a time, in every worker

    @classmethod
    async def open(cls, homedir: Path, edge_store: EdgeStore) -> TrustedKeys:
        keys = cls(await asyncio.to_thread(TrustStore, homedir), edge_store)
        await keys._share_local_keys()
        return keys

    async def _share_local_keys(self) -> None:
        """Keys trusted before their material was kept in the database are in this home only:
        put them there, so that other replicas can verify with them too."""
        trusted = {k.fingerprint for k in await self._edge_store.key_aliases()}
        held = await self._material.get(sorted(trusted))
        local = await asyncio.to_thread(self._store.fingerprints)
        for fingerprint in sorted((trusted - held.keys()) & local):
            await self._share(fingerprint)

    async def _share(self, fingerprint: str) -> None:
        armored = await asyncio.to_thread(self._store.export_public_key, fingerprint)
        await self._material.put(fingerprint, armored)

    async def close(self) -> None:
        await asyncio.to_thread(self._store.close)

    async def list(self) -> list[KeyAlias]:
        return await self._edge_store.key_aliases()

    async def trust(self, alias: str, armored: str) -> Trusted:
        """Trust one public key under ``alias``. The same key under the same alias again is a
        success (its import merges, which is how a revocation or a new expiry arrives); the
        alias naming another key is a 409."""
        alias = check_alias(alias)
        async with self._lock():
            try:
                fingerprint = await asyncio.to_thread(self._store.import_public_key, armored)
            except TrustedKeyError:
                await self._check_room()  # gpg cannot import anything on a full disk
                raise
            key, added = {k.alias: k for k in await self._edge_store.key_aliases()}.get(alias), False
            if key is None or key.fingerprint == fingerprint:
                # the material before the alias: a key is never trusted without it (and a repeat
                # may carry a revocation or a new expiry)
                await self._share(fingerprint)
                key, added = await self._edge_store.add_key_alias(KeyAlias(alias, fingerprint, now_ms()))
        if key.fingerprint != fingerprint:
            raise Conflict(f"Alias '{alias}' already names key {key.fingerprint}; remove it first")
        if added:
            log.info("trusting key %s as %s", fingerprint, alias)
        return Trusted(key, created=added)

    async def remove(self, alias: str) -> None:
        """Stop trusting the key ``alias`` names; it leaves the GnuPG home once no alias names it."""
        async with self._lock():
            keys = await self._edge_store.key_aliases()
            found = next((k for k in keys if k.alias == alias), None)
            if found is None:
                raise NotFound(f"No trusted key with alias '{alias}'")
            await self._edge_store.remove_key_alias(alias)
            if not any(k.fingerprint == found.fingerprint and k.alias != alias for k in keys):
                await self._material.forget(found.fingerprint)
                # Already gone from the home is fine: the alias table is what counts.
                with contextlib.suppress(NotFound):
                    await asyncio.to_thread(self._store.remove, found.fingerprint)
        log.info("no longer trusting key %s (%s)", found.fingerprint, alias)

    async def verify(self, data: Path, signature: str) -> str:
        """The fingerprint of the one trusted key that signed exactly the bytes of the file ``data``,
        or SignatureRefused."""
        trusted = {k.fingerprint for k in await self._edge_store.key_aliases()}
        await self._import_missing(trusted)
        try:
            return await asyncio.to_thread(self._store.verify_file, data, signature, trusted=trusted)
        except SignatureRefused:
            await self._check_room()  # nor check a signature: a full disk is not the sender's fault
            raise

    async def _import_missing(self, trusted: set[str]) -> None:
        """Import the trusted keys this replica's GnuPG home lacks (trusted through another replica)."""
        missing = trusted - await asyncio.to_thread(self._store.fingerprints)
        for fingerprint, armored in (await self._material.get(sorted(missing))).items():
            try:
                await asyncio.to_thread(self._store.import_public_key, armored)
            except TrustedKeyError as exc:
                log.error("could not import trusted key %s from the database: %s", fingerprint, exc)

    async def _check_room(self) -> None:
        await asyncio.to_thread(check_room, self._store.homedir, "the GnuPG home of the trusted keys")
