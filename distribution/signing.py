"""The Distribution service's signing keys: GnuPG keys by alias, exactly one the default.

Keys live in a private GnuPG home (0700, see ``GnupgHome`` for short socket
paths); which alias names which fingerprint, and which alias is the default, lives
in a small JSON state file written atomically. Every method is synchronous and
runs gpg as a subprocess: the service calls it through ``asyncio.to_thread``.

Passphrases: a key pair uploaded with a passphrase is checked with it and then
stored without one. The service signs unattended, so keeping the passphrase would
mean storing it next to the key, which protects nothing; the home's 0700 mode is
the protection, as for the key the service generates itself. The passphrase is
never written anywhere. gpg runs with ``--pinentry-mode error``, so a key that
still wanted a passphrase would fail at once instead of waiting for a prompt.

Private keys never leave through this module: ``export_public`` exports and checks
public material only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import gnupg

from repository.disk_space import check_room
from repository.errors import BadRequest, Conflict, NotFound, RepositoryError
from wire.signatures import (
    GPG_ERR_BAD_PASSPHRASE,
    GPG_ERR_NO_PIN_ENTRY,
    SIGNATURE_BEGIN,
    GnupgFailure,
    GnupgHome,
    StatusRecorder,
    gpg_said,
    parse_status,
    status_error_codes,
)
from wire.timestamps import utc_timestamp

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"
ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_BYTES = 1024 * 1024
PRIVATE_KEY_BEGIN = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
STATE_FORMAT = 1
SIGNER_OPTIONS = ("--pinentry-mode", "error", "--digest-algo", "SHA512")
RSA_ALGOS = {"1", "2", "3"}


class SigningKeyError(BadRequest):
    """A key pair upload the service refuses; the message says why."""

    default_message = "Invalid signing key"


class SigningKeyExists(Conflict):
    default_message = "A signing key with that alias already exists"


class SigningKeyNotFound(NotFound):
    default_message = "No signing key with that alias"


class SigningFailed(GnupgFailure):
    """gpg made no signature (a 500); ``codes`` are its libgpg-error codes."""

    def __init__(self, message: str, codes: set[int]) -> None:
        super().__init__(message)
        self.codes = codes


class SigningStateError(RepositoryError):
    """The alias file and the GnuPG home disagree: the service cannot start safely."""

    default_message = "Signing key state is inconsistent"


@dataclass(frozen=True)
class KeyInfo:
    alias: str
    fingerprint: str
    default: bool
    created: str  # ISO 8601 UTC, like manifest times
    algorithm: str  # "ed25519", "rsa3072", ...


class RecordingSign(StatusRecorder, gnupg.Sign):  # type: ignore[misc]  # gnupg has no type hints
    def __init__(self, gpg: gnupg.GPG) -> None:
        gnupg.Sign.__init__(self, gpg)
        self.status_lines = []


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise SigningKeyError(f"Invalid key alias {alias!r}: 1 to 64 letters, digits, '.', '_' or '-'")
    return alias


def _algorithm(entry: dict[str, Any]) -> str:
    algo, curve = entry.get("algo", ""), entry.get("curve") or ""
    if algo in RSA_ALGOS:
        return f"rsa{entry.get('length', '')}"
    if algo in {"19", "22"} and curve:  # ECDSA, EdDSA: the curve says it all
        return curve if algo == "22" else f"ecdsa-{curve}"
    return {"17": "dsa"}.get(algo, f"openpgp-algo-{algo}")


def _write_atomic(path: Path, data: bytes) -> None:
    """temp file in the same directory, fsync, os.replace, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _gen_key_input(uid: str) -> str:
    """gpg batch parameters for an ed25519 signing key without passphrase or expiry."""
    if not uid.strip() or len(uid) > 256 or any(unicodedata.category(ch) == "Cc" for ch in uid):
        raise SigningKeyError("A key user id must be 1 to 256 printable characters")
    match = re.fullmatch(r"\s*(.*?)\s*<([^<>\s]+)>\s*", uid)
    name, email = (match.group(1), match.group(2)) if match else (uid.strip(), "")
    lines = ["Key-Type: eddsa", "Key-Curve: ed25519", "Key-Usage: sign", "Expire-Date: 0"]
    lines += [f"Name-Real: {name}"] if name else []
    lines += [f"Name-Email: {email}"] if email else []
    return "\n".join([*lines, "%no-protection", "%commit", ""])


class Signer:
    """Signing keys by alias; one of them, the default, signs when no alias is given."""

    def __init__(self, homedir: Path, state_file: Path) -> None:
        self._home = GnupgHome(homedir, autostart=True, options=SIGNER_OPTIONS)
        self._gpg = self._home.gpg
        self._gpg.result_map = {**self._gpg.result_map, "sign": RecordingSign}
        self._state_file = state_file
        self._lock = threading.RLock()
        self._aliases: dict[str, str] = {}
        self._default: str | None = None
        try:
            self._load_state()
        except BaseException:
            self._home.close()
            raise

    # -- state ---------------------------------------------------------------------

    def _load_state(self) -> None:
        if not self._state_file.exists():
            return
        try:
            state = json.loads(self._state_file.read_bytes())
            aliases, default = dict(state["keys"]), state["default"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningStateError(f"Unreadable signing key state {self._state_file}: {exc}") from exc
        secret = self._secret_keys()
        for alias, fingerprint in aliases.items():
            if fingerprint not in secret:
                raise SigningStateError(f"Key {alias!r} ({fingerprint}) is not in GnuPG home {self._home.homedir}")
        if aliases and default not in aliases:
            raise SigningStateError(f"Default key alias {default!r} names no key")
        self._aliases, self._default = aliases, default if aliases else None

    def _save_state(self) -> None:
        state = {"format": STATE_FORMAT, "default": self._default, "keys": self._aliases}
        _write_atomic(self._state_file, json.dumps(state, indent=2, sort_keys=True).encode() + b"\n")

    def _secret_keys(self, gpg: gnupg.GPG | None = None) -> dict[str, dict[str, Any]]:
        return {key["fingerprint"]: key for key in (gpg or self._gpg).list_keys(secret=True)}

    def _fingerprint(self, alias: str | None) -> str:
        with self._lock:
            name = self._default if alias is None else alias
            if name is None or name not in self._aliases:
                raise SigningKeyNotFound(f"No signing key with alias {name!r}" if name else "No signing key yet")
            return self._aliases[name]

    def _add(self, alias: str, fingerprint: str) -> None:
        self._aliases[alias] = fingerprint
        if self._default is None:
            self._default = alias
        self._save_state()

    # -- keys ----------------------------------------------------------------------

    def ensure_default_key(self, uid: str) -> KeyInfo:
        """The default key; on first start, a new ed25519 key under alias ``default``.

        A key found in the home but in no state file (the process died between making
        it and recording it) is adopted instead of making another, if it is the only one.
        """
        with self._lock:
            if self._default is None:
                orphans = sorted(self._secret_keys())
                if len(orphans) == 1:
                    fingerprint = orphans[0]
                    log.warning("adopting signing key %s found without an alias", fingerprint)
                else:
                    fingerprint = self._generate(uid)
                self._add(DEFAULT_ALIAS, fingerprint)
            assert self._default is not None
            return self._info(self._default)

    def _generate(self, uid: str) -> str:
        # Bytes, not str: python-gnupg would encode a str as Latin-1, and gpg reads UTF-8.
        result = self._gpg.gen_key(_gen_key_input(uid).encode("utf-8"))
        if result.status != "ok" or not result.fingerprint:
            raise GnupgFailure(f"gpg could not create a signing key: {gpg_said(result.stderr)}")
        log.info("created ed25519 signing key %s", result.fingerprint)
        return str(result.fingerprint)

    def keys(self) -> list[KeyInfo]:
        with self._lock:
            secret = self._secret_keys()
            return [self._info(alias, secret) for alias in sorted(self._aliases)]

    def _info(self, alias: str, secret: dict[str, dict[str, Any]] | None = None) -> KeyInfo:
        fingerprint = self._aliases[alias]
        entry = (secret or self._secret_keys()).get(fingerprint)
        if entry is None:
            raise SigningStateError(f"Key {alias!r} ({fingerprint}) vanished from the GnuPG home")
        return KeyInfo(
            alias=alias,
            fingerprint=fingerprint,
            default=alias == self._default,
            created=utc_timestamp(datetime.fromtimestamp(int(entry["date"]), UTC)),
            algorithm=_algorithm(entry),
        )

    def set_default(self, alias: str) -> KeyInfo:
        with self._lock:
            self._fingerprint(alias)
            self._default = alias
            self._save_state()
            return self._info(alias)

    def import_key_pair(self, alias: str, private_key_armored: str, passphrase: str | None = None) -> KeyInfo:
        """Add an uploaded key pair under ``alias``; the first key becomes the default.

        The key is checked in a scratch GnuPG home first (one key pair, able to sign,
        the passphrase right), and only a key that signed there reaches the service's
        home, stripped of its passphrase. A refused upload changes nothing.
        """
        check_alias(alias)
        with self._lock:
            if alias in self._aliases:
                raise SigningKeyExists(f"A signing key with alias {alias!r} already exists")
        armored = _check_private_armor(private_key_armored)
        if passphrase is not None and any(ch in passphrase for ch in "\r\n\0"):
            raise SigningKeyError("A passphrase cannot contain line breaks or NUL")
        scratch_dir = Path(tempfile.mkdtemp(prefix=".import-", dir=self._home.homedir))
        try:
            with GnupgHome(scratch_dir, autostart=True, options=SIGNER_OPTIONS) as scratch:
                scratch.gpg.result_map = {**scratch.gpg.result_map, "sign": RecordingSign}
                fingerprint = _vet_key_pair(scratch, armored, passphrase or None)
                unprotected = scratch.gpg.export_keys(fingerprint, secret=True, expect_passphrase=False)
        finally:
            shutil.rmtree(scratch_dir, ignore_errors=True)
        with self._lock:
            if alias in self._aliases:
                raise SigningKeyExists(f"A signing key with alias {alias!r} already exists")
            taken = [a for a, f in self._aliases.items() if f == fingerprint]
            if taken:
                raise SigningKeyExists(f"Key {fingerprint} is already present as alias {taken[0]!r}")
            result = self._gpg.import_keys(unprotected.encode("ascii"))
            if fingerprint not in self._secret_keys():
                raise GnupgFailure(f"gpg could not store the key: {gpg_said(result.stderr)}")
            self._add(alias, fingerprint)
            log.info("imported signing key %s as %r", fingerprint, alias)
            return self._info(alias)

    def export_public(self, alias: str | None = None) -> str:
        """The ASCII-armored public key of ``alias`` (default key if None); never private material."""
        fingerprint = self._fingerprint(alias)
        armored = self._gpg.export_keys(fingerprint, armor=True, minimal=True)
        if "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in armored or "PRIVATE KEY" in armored:
            raise GnupgFailure(f"gpg exported no public key for {fingerprint}")
        return str(armored)

    def sign(self, data: bytes | BinaryIO, alias: str | None = None) -> str:
        """A detached ASCII-armored signature over exactly ``data`` by the key ``alias``; ``data``
        may be a file, read from its current position to its end (gpg is fed a chunk at a time,
        so a manifest of any size is signed without being held in memory)."""
        fingerprint = self._fingerprint(alias)
        try:
            return _sign_with(self._gpg, data, fingerprint)
        except SigningFailed:
            check_room(self._home.homedir, "the GnuPG home of the signing keys")  # 507 if the disk is full
            raise

    def close(self) -> None:
        self._home.close()

    def __enter__(self) -> Signer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_private_armor(armored: object) -> bytes:
    if not isinstance(armored, str) or not armored.strip():
        raise SigningKeyError("A key pair must be sent as ASCII-armored text")
    if len(armored) > MAX_KEY_BYTES:
        raise SigningKeyError(f"Key larger than {MAX_KEY_BYTES} bytes")
    if PRIVATE_KEY_BEGIN not in armored:
        if "-----BEGIN PGP PUBLIC KEY BLOCK-----" in armored:
            raise SigningKeyError("This is a public key only; signing needs the private key")
        raise SigningKeyError(f"No ASCII-armored private key found (expected {PRIVATE_KEY_BEGIN})")
    if armored.count(PRIVATE_KEY_BEGIN) != 1:
        raise SigningKeyError("More than one private key block; upload one key pair")
    return armored.encode("utf-8")


def _vet_key_pair(scratch: GnupgHome, armored: bytes, passphrase: str | None) -> str:
    """In a scratch home: exactly one key pair that can sign, passphrase removed. Its fingerprint."""
    gpg = scratch.gpg
    result = gpg.import_keys(armored)
    secret = {key["fingerprint"]: key for key in gpg.list_keys(secret=True)}
    if not result.sec_read or not secret:
        raise SigningKeyError("No private key could be read from the upload")
    if len(secret) != 1:
        raise SigningKeyError(f"The upload holds {len(secret)} keys; upload one key pair")
    fingerprint, entry = next(iter(secret.items()))
    fingerprint = str(fingerprint)
    public = gpg.list_keys(keys=fingerprint)
    validity = public[0].get("trust", "") if public else ""
    if validity in {"r", "e"}:
        raise SigningKeyError(f"Key {fingerprint} is {'revoked' if validity == 'r' else 'expired'}")
    if "S" not in entry.get("cap", ""):
        raise SigningKeyError(f"Key {fingerprint} cannot make signatures (capabilities {entry.get('cap')!r})")
    if not _signs(gpg, fingerprint):  # protected: a passphrase only unlocks; sent with an open key, it is unused
        if passphrase is None:
            raise SigningKeyError("The key is protected by a passphrase; send the passphrase with it")
        _remove_passphrase(scratch, fingerprint, passphrase)
        if not _signs(gpg, fingerprint):
            raise SigningKeyError("The key is still protected after its passphrase was removed")
    return fingerprint


def _signs(gpg: gnupg.GPG, fingerprint: str) -> bool:
    """Whether the key signs without a passphrase; False when gpg wants one (and may not ask)."""
    try:
        _sign_with(gpg, b"signing key probe", fingerprint)
    except SigningFailed as exc:
        if GPG_ERR_NO_PIN_ENTRY in exc.codes:
            return False
        raise SigningKeyError(f"The key cannot make signatures: {exc.message}") from None
    return True


def _remove_passphrase(scratch: GnupgHome, fingerprint: str, passphrase: str) -> None:
    """``gpg --passwd`` answering the old passphrase, then an empty new one."""
    answers = f"{passphrase}\n\n".encode()
    done = scratch.run(["--pinentry-mode", "loopback", "--command-fd", "0", "--passwd", fingerprint], stdin=answers)
    stderr = done.stderr.decode("utf-8", "replace")
    status = parse_status(stderr)
    if ("SUCCESS", "keyedit.passwd") not in status:
        if GPG_ERR_BAD_PASSPHRASE in status_error_codes(status):
            raise SigningKeyError("Wrong passphrase for the uploaded key")
        raise SigningKeyError(f"The key's passphrase could not be checked: {gpg_said(stderr)}")


def _sign_with(gpg: gnupg.GPG, data: bytes | BinaryIO, fingerprint: str) -> str:
    """Sign with exactly ``fingerprint`` (or its signing subkey) and check what gpg says it did."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    # --local-user, unlike --default-key, never lets gpg fall back to another key.
    result: Any = gpg.sign_file(
        stream, detach=True, binary=False, clearsign=False, extra_args=["--local-user", fingerprint]
    )
    keywords = result.keywords
    signer = (result.fingerprint or "").upper()
    allowed = {fingerprint}
    if signer != fingerprint:  # made by a signing subkey? it must be one of this key's
        for key in gpg.list_keys(keys=fingerprint):
            allowed.update(sub[2] for sub in key.get("subkeys", []) if sub[2])
    signature = str(result.data.decode("ascii", "replace"))
    ok = (
        result.returncode == 0
        and keywords.count("SIG_CREATED") == 1
        and result.type == "D"
        and signer in allowed
        and signature.startswith(SIGNATURE_BEGIN)
    )
    if not ok:
        raise SigningFailed(
            f"gpg did not sign with {fingerprint}: {gpg_said(result.stderr)}", status_error_codes(result.status_lines)
        )
    return signature
