"""Real OpenPGP test keys, made with plain gpg in throwaway homes (never with the code under test).

Each key lives in its own short GnuPG home under /tmp, so gpg-agent's socket path
stays short; ``KeyFactory.close`` stops the agents and removes the homes. Keys
from the past (expired keys, expired signatures) are made with gpg's
``--faked-system-time``. ed25519 and ``%no-protection`` keep generation fast.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

DAY = 86400


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    uid: str
    fingerprint: str
    public: str  # ASCII-armored public key
    private: str  # ASCII-armored private key (protected if made with a passphrase)
    home: Path  # the key's own GnuPG home, which can sign with it


def gpg(
    home: Path, *args: str, stdin: bytes = b"", faked_time: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run gpg in ``home`` in batch mode; raise with gpg's own words if it fails."""
    command = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--status-fd", "2"]
    if faked_time is not None:
        command += ["--faked-system-time", f"{faked_time}!"]
    done = subprocess.run([*command, *args], input=stdin, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done


def verify_with_plain_gpg(home: Path, signature: Path, data: Path) -> tuple[int, str]:
    """``gpg --verify`` as a user would run it: exit code and the status lines."""
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--status-fd", "1", "--verify", str(signature), str(data)],
        capture_output=True,
        timeout=60,
    )
    return done.returncode, done.stdout.decode(errors="replace")


class KeyFactory:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gk-", dir="/tmp"))
        self._homes: list[Path] = []
        self._count = 0

    def new_home(self) -> Path:
        self._count += 1
        home = self.root / str(self._count)
        home.mkdir(mode=0o700)
        # A fixed, small S2K count: the agent skips its 100 ms calibration, and
        # passphrase-protected test keys are quick to unlock (these keys guard nothing).
        (home / "gpg-agent.conf").write_text("s2k-count 65536\n")
        self._homes.append(home)
        return home

    def make_key(
        self,
        uid: str,
        *,
        algo: str = "ed25519",
        usage: str = "sign",
        expire: str = "never",
        created_days_ago: float = 0,
        passphrase: str | None = None,
    ) -> TestKey:
        """A fresh key pair; ``created_days_ago`` makes it in the past (with ``expire`` like ``1d``)."""
        home = self.new_home()
        created = int(time.time() - created_days_ago * DAY) if created_days_ago else None
        secret = ["--pinentry-mode", "loopback", "--passphrase", passphrase or ""]
        gpg(home, *secret, "--quick-gen-key", uid, algo, usage, expire, faked_time=created)
        listing = gpg(home, "--with-colons", "--list-keys").stdout.decode()
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        public = gpg(home, "--armor", "--export", fingerprint).stdout.decode()
        private = gpg(home, *secret, "--armor", "--export-secret-keys", fingerprint).stdout.decode()
        return TestKey(uid, fingerprint, public, private, home)

    def sign(
        self, key: TestKey, data: bytes, *, days_ago: float = 0, sig_expire: str | None = None, armor: bool = True
    ) -> bytes:
        """A detached signature over ``data`` by ``key``, optionally made in the past."""
        when = int(time.time() - days_ago * DAY) if days_ago else None
        args = ["--local-user", key.fingerprint, "--detach-sign"] + (["--armor"] if armor else [])
        if sig_expire:
            args += ["--default-sig-expire", sig_expire]
        return gpg(key.home, *args, stdin=data, faked_time=when).stdout

    def sign_with_all(self, keys: Sequence[TestKey], data: bytes) -> bytes:
        """One armored block holding a signature by each key over the same data."""
        home = self.new_home()
        users: list[str] = []
        for key in keys:
            gpg(home, "--import", stdin=key.private.encode())
            users += ["--local-user", key.fingerprint]
        return gpg(home, *users, "--detach-sign", "--armor", stdin=data).stdout

    def revoke(self, key: TestKey) -> TestKey:
        """Import ``key``'s revocation certificate in its home; the revoked public key."""
        certificate = (key.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev").read_text()
        # gpg stores it with the armor line escaped so it is not imported by accident.
        gpg(key.home, "--import", stdin=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
        public = gpg(key.home, "--armor", "--export", key.fingerprint).stdout.decode()
        return TestKey(key.uid, key.fingerprint, public, key.private, key.home)

    def close(self) -> None:
        for home in self._homes:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


# Named fixtures: test modules import ``*_fixture`` and ask for ``key_factory`` / ``keys``.
@pytest.fixture(scope="session", name="key_factory")
def key_factory_fixture() -> Iterator[KeyFactory]:
    factory = KeyFactory()
    try:
        yield factory
    finally:
        factory.close()


REVOKED_DATA = b'{"note":"signed before the key was revoked"}'


@dataclass(frozen=True)
class KeySet:
    alice: TestKey  # trusted
    bob: TestKey  # trusted too (rotation)
    mallory: TestKey  # never trusted
    expired: TestKey  # made ten days ago, expired nine days ago
    revoked: TestKey  # its public key carries its revocation; gpg no longer signs with it
    revoked_public_before: str  # the same public key as it was before the revocation
    revoked_signature: bytes  # over REVOKED_DATA, made before the revocation
    rsa: TestKey
    made_in_past: TestKey  # made ten days ago, never expires: for expired signatures


@pytest.fixture(scope="session", name="keys")
def keys_fixture(key_factory: KeyFactory) -> KeySet:
    make = key_factory.make_key
    to_revoke = make("Revoked Signer <revoked@example.com>")
    revoked_signature = key_factory.sign(to_revoke, REVOKED_DATA)
    return KeySet(
        alice=make("Alice Release <alice@example.com>"),
        bob=make("Bob Release <bob@example.com>"),
        mallory=make("Mallory <mallory@example.com>"),
        expired=make("Expired Signer <expired@example.com>", expire="1d", created_days_ago=10),
        revoked=key_factory.revoke(to_revoke),
        revoked_public_before=to_revoke.public,
        revoked_signature=revoked_signature,
        rsa=make("RSA Signer <rsa@example.com>", algo="rsa2048"),
        made_in_past=make("Past Signer <past@example.com>", created_days_ago=10),
    )
