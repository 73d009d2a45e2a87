"""The keys signed URLs are made and checked with, by ``kid``.

- **own**: Ed25519 keys this edge made. The private key is a PEM file (0600, in a
  0700 directory of the data dir); the first is made on first start, ``rotate`` makes
  the next, and the newest signs. Older ones keep verifying until removed. Replicas of
  an edge on other machines each make and sign with keys of their own; every replica
  verifies every own key with its public key, stored in the shared database.
- **trusted**: other issuers' Ed25519 public keys, added through the admin API, so
  one issuer's URLs work on every edge that trusts it.
- **settings**: ``[[access.signed_urls.keys]]``: public keys, or HS256 secrets (the
  only place a secret can come from). With ``algorithm = "HS256"`` the first secret signs.

Removing a key makes every URL it signed fail from that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from repository.catalog import now_ms
from repository.db import Database
from repository.errors import BadRequest, Conflict, NotFound

from .signed_urls import KID_RE, SigningKey, UrlKeySpec, VerifyKey, key_id, load_public_key, public_pem

log = logging.getLogger(__name__)


class UrlKeyring:
    def __init__(self, database: Database, key_dir: Path, configured: tuple[UrlKeySpec, ...], algorithm: str) -> None:
        self._database = database
        self._key_dir = key_dir
        self._configured = configured
        self.algorithm = algorithm
        self._own: dict[str, Ed25519PrivateKey] = {}
        self._verify: dict[str, VerifyKey] = {}
        self._signing: SigningKey | None = None
        database.copies.register(self._load)  # another process rotated, trusted or removed a key

    async def open(self) -> None:
        """Load every key; make this edge's first own key if it has none."""
        await self._load()
        if not self._own:
            await self.rotate()

    async def _load(self) -> None:
        rows = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT kid, algorithm, public_key, own, created FROM url_signing_keys ORDER BY created, kid"
            ).fetchall()
        )
        own: dict[str, Ed25519PrivateKey] = {}
        verify: dict[str, VerifyKey] = {}
        newest: str | None = None
        for kid, algorithm, pem, is_own, created in rows:
            # A replica on another machine made the keys whose private file is not here: this
            # one verifies their URLs with the stored public key, and signs with its own keys.
            if is_own and (private := await asyncio.to_thread(self._read_private, kid)) is not None:
                own[kid], newest = private, kid
            verify[kid] = VerifyKey(kid, algorithm, load_public_key(pem), "own" if is_own else "trusted", created)
        for spec in self._configured:  # settings win over a stored key of the same kid
            if spec.kid in verify:
                log.warning("url-signing key %s is in the settings and the database: the settings' is used", spec.kid)
            if spec.secret is not None:
                verify[spec.kid] = VerifyKey(spec.kid, "HS256", spec.secret.encode(), "settings")
            else:
                assert spec.public_key is not None
                verify[spec.kid] = VerifyKey(spec.kid, "EdDSA", load_public_key(spec.public_key), "settings")
        self._own, self._verify = own, verify
        self._signing = self._choose_signing(newest)

    def _choose_signing(self, newest_own: str | None) -> SigningKey | None:
        if self.algorithm == "HS256":
            secret = next((s for s in self._configured if s.secret is not None), None)
            if secret is None:
                raise ValueError("signed URLs with HS256 need a key with a 'secret' in [[access.signed_urls.keys]]")
            assert secret.secret is not None
            return SigningKey(secret.kid, "HS256", secret.secret.encode())
        if newest_own is None:
            return None
        return SigningKey(newest_own, "EdDSA", self._own[newest_own])

    def _read_private(self, kid: str) -> Ed25519PrivateKey | None:
        path = self._key_dir / f"{kid}.pem"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            return None  # made by another replica, which keeps it
        except (OSError, ValueError) as exc:
            log.error("url-signing key %s cannot be read from %s (%s): it does not sign here", kid, path, exc)
            return None
        if not isinstance(key, Ed25519PrivateKey):
            log.error("url-signing key file %s is not an Ed25519 key: it does not sign here", path)
            return None
        return key

    def signing_key(self) -> SigningKey:
        if self._signing is None:
            raise RuntimeError("no url-signing key: the keyring is not open")
        return self._signing

    def verify_key(self, kid: str) -> VerifyKey | None:
        return self._verify.get(kid)

    def known(self) -> list[VerifyKey]:
        return list(self._verify.values())

    @property
    def signing_kid(self) -> str | None:
        return None if self._signing is None else self._signing.kid

    async def rotate(self) -> VerifyKey:
        """Make a new own key, which signs from now on; the older ones keep verifying."""
        private = Ed25519PrivateKey.generate()
        kid = key_id(private.public_key())
        await asyncio.to_thread(self._write_private, kid, private)
        await self._database.run(self._add, kid, public_pem(private.public_key()), True)
        await self._load()
        self._database.changed()
        log.info("url-signing key %s made; it signs new URLs", kid)
        return self._verify[kid]

    def _write_private(self, kid: str, key: Ed25519PrivateKey) -> None:
        """The PEM file, 0600 from its first byte, fsynced with its directory before the row points at it."""
        self._key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self._key_dir, 0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self._key_dir / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        dir_fd = os.open(self._key_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def trust(self, kid: str, pem: str) -> tuple[VerifyKey, bool]:
        """Trust another issuer's Ed25519 public key under ``kid``; answers the key and whether it is new."""
        if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
            raise BadRequest("'kid' must be 1 to 64 letters, digits, '.', '_' or '-'")
        try:
            public = load_public_key(pem)
        except ValueError as exc:
            raise BadRequest(f"'public_key' {exc}") from None
        existing = self._verify.get(kid)
        if existing is not None:
            if existing.public_pem == public_pem(public):
                return existing, False  # the same key again: nothing to do
            raise Conflict(f"A url-signing key with kid '{kid}' already exists")
        taken_by = await self._database.run(self._add, kid, public_pem(public), False)
        await self._load()
        if taken_by is None:
            self._database.changed()
            return self._verify[kid], True
        if taken_by == public_pem(public):  # another process trusted the same key first
            return self._verify[kid], False
        raise Conflict(f"A url-signing key with kid '{kid}' already exists")

    def _add(self, kid: str, pem: str, own: bool) -> str | None:
        """Store a key unless ``kid`` is taken (by another process since this one last loaded);
        answers None when stored, else the public key stored under ``kid``."""
        db = self._database.db
        with db.atomic():
            added = db.execute(
                "INSERT INTO url_signing_keys (kid, algorithm, public_key, own, created)"
                " VALUES (:kid, 'EdDSA', :public_key, :own, :created) ON CONFLICT (kid) DO NOTHING RETURNING kid",
                {"kid": kid, "public_key": pem, "own": int(own), "created": now_ms()},
            ).fetchone()
            if added is not None:
                return None
            return str(db.scalar("SELECT public_key FROM url_signing_keys WHERE kid = :kid", {"kid": kid}))

    async def remove(self, kid: str) -> None:
        """Stop trusting ``kid``: its URLs are refused from now on. The key that signs must be rotated first."""
        key = self._verify.get(kid)
        if key is None:
            raise NotFound(f"No url-signing key with kid '{kid}'")
        if key.source == "settings":
            raise Conflict(f"Key '{kid}' comes from the settings file; remove it there")
        if kid == self.signing_kid:
            raise Conflict(f"Key '{kid}' signs new URLs; rotate to a new key before removing it")
        await self._database.run(
            self._database.db.execute, "DELETE FROM url_signing_keys WHERE kid = :kid", {"kid": kid}
        )
        if key.source == "own":
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, self._key_dir / f"{kid}.pem")
        await self._load()
        self._database.changed()
