"""Signature checks: is this manifest signed, once, by a key this node (an edge, a device) trusts?

A ``TrustStore`` is a GnuPG home holding only the public keys a node trusts (the
circle of trust). ``verify`` answers the signer's full primary fingerprint or raises
``SignatureRefused`` with the reason. Every call is synchronous and runs gpg as a
subprocess: async callers run it in a thread (``asyncio.to_thread``).

The decision is ours, never gpg's exit code: gpg exits 0 for a signature by an
expired or revoked key and for two good signatures on one file. So gpg runs with
``--trust-model always`` (its web of trust plays no part) and the answer is read
from python-gnupg's result fields and the status lines it saw: exactly one
signature, GOODSIG and VALIDSIG, no EXPSIG/EXPKEYSIG/REVKEYSIG/BADSIG/ERRSIG, and a
primary fingerprint in the trusted set.

gpg never touches the network (no keyserver look-ups, no dirmngr) and a trust
store never starts a gpg-agent (``--no-autostart``): it only needs public keys, and
without an agent gpg cannot store private keys in it even by mistake.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import gnupg

from .errors import InvalidInput, WireError

log = logging.getLogger(__name__)

# sun_path holds 108 bytes including the NUL, but gpg-agent refuses a path of 107 ("socket name
# ... is too long"): 106 is the longest it binds. Its longest socket name is this one.
SOCKET_PATH_MAX = 106
LONGEST_SOCKET_NAME = "S.gpg-agent.browser"
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_PUBLIC_KEY_BYTES = 1024 * 1024
FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
SIGNATURE_BEGIN = "-----BEGIN PGP SIGNATURE-----"
PUBLIC_KEY_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_BEGIN = "-----BEGIN PGP "

# Options for every gpg run: no gpg.conf from the home, nothing fetched from the network,
# and clock skew between services tolerated. Without --ignore-time-conflict, a key or
# signature made on a machine whose clock is minutes ahead is refused ("created in the
# future"): its user id is dropped at import and its signatures fail. Expiry and
# revocation are still judged against this machine's clock.
BASE_OPTIONS = (
    "--no-options",
    "--no-auto-key-retrieve",
    "--no-auto-key-locate",
    "--no-auto-key-import",
    "--disable-dirmngr",
    "--ignore-time-conflict",
)
VERDICTS = ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")
REFUSED_VERDICTS = {
    "BADSIG": "bad signature: the data or the signature was altered",
    "EXPSIG": "the signature has expired",
    "EXPKEYSIG": "the signing key has expired",
    "REVKEYSIG": "the signing key has been revoked",
}


class SignatureRefused(WireError):
    """The signature does not establish that a trusted key signed these exact bytes.

    422: the request is well formed, but what it asks (accept this bundle) is refused.
    """

    status = 422
    default_message = "Signature refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Signature refused: {reason}")
        self.reason = reason


class TrustedKeyError(InvalidInput):
    """A key offered to the trust store is not exactly one armored public key."""

    default_message = "Invalid public key"


class TrustedKeyNotFound(WireError):
    status = 404
    default_message = "No trusted key with that fingerprint"


class GnupgFailure(WireError):
    """gpg itself failed (not the input): a 500, logged with gpg's own words."""

    default_message = "GnuPG failed"


def check_fingerprint(value: str) -> str:
    """A full primary fingerprint (v4: 40 hex, v5: 64 hex); spaces allowed, case folded."""
    normal = value.replace(" ", "").upper() if isinstance(value, str) else ""
    if not FINGERPRINT_RE.fullmatch(normal):
        raise TrustedKeyError(f"Not a full key fingerprint: {value!r}")
    return normal


def gpg_said(stderr: str, lines: int = 2) -> str:
    """gpg's last human-readable lines, for an error message (status lines left out)."""
    said = [line.strip() for line in stderr.splitlines() if line.startswith("gpg: ")]
    return "; ".join(said[-lines:]) or "no message from gpg"


def _short_tmp() -> str:
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else tempfile.gettempdir()


class GnupgHome:
    """A private GnuPG home (mode 0700) and the ``gnupg.GPG`` that works in it.

    gpg-agent puts its sockets in the home unless ``/run/user/<uid>`` exists, and a
    socket path longer than 107 bytes cannot be bound: the agent fails to start and
    every private-key operation fails with "No agent running". A data dir deep in a
    filesystem easily exceeds that. When it would, the keys still live in
    ``homedir``, but gpg is pointed at a short symlink to it in a private 0700
    directory under /tmp. ``close`` stops the agents gpg started there and removes
    the symlink.
    """

    def __init__(self, homedir: Path, *, autostart: bool, options: Sequence[str] = ()) -> None:
        homedir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(homedir, 0o700)  # gpg refuses a home others can read; keys are secrets
        self.homedir = homedir.absolute()
        self._link_dir: Path | None = None
        self._closed = False
        if len(os.fsencode(self.homedir)) + 1 + len(LONGEST_SOCKET_NAME) > SOCKET_PATH_MAX:
            self._link_dir = Path(tempfile.mkdtemp(prefix="gnupg-", dir=_short_tmp()))
            (self._link_dir / "h").symlink_to(self.homedir, target_is_directory=True)
            self.path = self._link_dir / "h"
        else:
            self.path = self.homedir
        self.options = [*BASE_OPTIONS, *([] if autostart else ["--no-autostart"]), *options]
        try:
            self.gpg = gnupg.GPG(gnupghome=str(self.path), options=list(self.options))
        except (OSError, ValueError) as exc:
            self.close()
            raise GnupgFailure(f"Cannot run gpg: {exc}") from exc

    def run(self, args: Sequence[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """gpg with this home and options, for commands python-gnupg has no method for.

        Status lines (``[GNUPG:] ...``) come on stderr.
        """
        command = [self.gpg.gpgbinary, "--homedir", str(self.path), "--batch", "--no-tty", "--status-fd", "2"]
        return subprocess.run([*command, *self.options, *args], input=stdin, capture_output=True, timeout=60)

    def close(self) -> None:
        """Stop any gpg-agent (and other daemons) started for this home; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            subprocess.run(
                ["gpgconf", "--homedir", str(self.path), "--kill", "all"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop gpg-agent for %s: %s", self.homedir, exc)
        # The agent removes its socket as it exits; wait briefly so it does so through the
        # link, before the link goes away, leaving no stale socket in the home.
        deadline = time.monotonic() + 2.0
        while (self.homedir / "S.gpg-agent").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._link_dir is not None:
            shutil.rmtree(self._link_dir, ignore_errors=True)

    def __enter__(self) -> GnupgHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# libgpg-error codes (the low 16 bits of the numbers in FAILURE/ERROR status lines):
# locale-independent, unlike gpg's messages.
GPG_ERR_BAD_PASSPHRASE = 11
GPG_ERR_NO_PIN_ENTRY = 85


def status_error_codes(lines: Iterable[tuple[str, str]]) -> set[int]:
    """Error codes from ``FAILURE``/``ERROR`` status lines (``[GNUPG:] FAILURE sign 67108949``)."""
    codes = set()
    for key, value in lines:
        last = value.rsplit(" ", 1)[-1]
        if key in {"FAILURE", "ERROR"} and last.isdigit():
            codes.add(int(last) & 0xFFFF)
    return codes


def parse_status(stderr: str) -> list[tuple[str, str]]:
    """``[GNUPG:] KEY value`` lines of a gpg run made with ``--status-fd 2``."""
    lines = [line[len("[GNUPG:] ") :].strip() for line in stderr.splitlines() if line.startswith("[GNUPG:] ")]
    return [(line.partition(" ")[0], line.partition(" ")[2]) for line in lines]


class StatusRecorder:
    """Mixin for python-gnupg result classes: keep every status line, in order.

    python-gnupg folds status lines into a few fields where the last line wins (two
    GOODSIGs look like one); counting signatures needs the lines themselves.
    """

    status_lines: list[tuple[str, str]]

    @property
    def keywords(self) -> list[str]:
        return [key for key, _ in self.status_lines]

    def handle_status(self, key: str, value: str) -> None:
        self.status_lines.append((key, value))
        try:
            super().handle_status(key, value)  # type: ignore[misc]
        except (ValueError, IndexError):  # a status line python-gnupg cannot split
            self.status_lines.append(("MALFORMED", key))


class RecordingVerify(StatusRecorder, gnupg.Verify):  # type: ignore[misc]  # gnupg has no type hints
    def __init__(self, gpg: gnupg.GPG) -> None:
        gnupg.Verify.__init__(self, gpg)
        self.status_lines = []


def _check_armored_signature(signature: bytes | str) -> bytes:
    raw = signature.encode("utf-8") if isinstance(signature, str) else bytes(signature)
    if not raw.strip():
        raise SignatureRefused("no signature")
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise SignatureRefused(f"signature larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureRefused("the signature must be ASCII-armored") from None
    if not text.lstrip().startswith(SIGNATURE_BEGIN):
        raise SignatureRefused(f"not an ASCII-armored detached signature (expected {SIGNATURE_BEGIN})")
    if text.count(ARMOR_BEGIN) != 1:
        raise SignatureRefused("more than one armored block; exactly one signature is accepted")
    return raw


def judge(result: RecordingVerify, trusted: Collection[str]) -> str:
    """The signer's primary fingerprint if ``result`` shows one good signature by a trusted key."""
    keywords = result.keywords
    verdicts = [k for k in keywords if k in VERDICTS]
    count = max(keywords.count("NEWSIG"), len(verdicts))
    if "PLAINTEXT" in keywords:
        raise SignatureRefused("not a detached signature (it carries its own data)")
    if count == 0:
        raise SignatureRefused("no OpenPGP signature found")
    if count > 1:
        raise SignatureRefused(f"{count} signatures; exactly one is accepted")
    verdict = verdicts[0] if verdicts else "none"
    if verdict in REFUSED_VERDICTS:
        raise SignatureRefused(REFUSED_VERDICTS[verdict])
    if verdict == "ERRSIG":
        who = result.fingerprint or result.key_id or "unknown"
        if "NO_PUBKEY" in keywords:
            raise SignatureRefused(f"signed by a key this node does not trust ({who})")
        raise SignatureRefused(f"the signature cannot be checked ({who}: unsupported or malformed)")
    valid = (
        verdict == "GOODSIG"
        and "VALIDSIG" in keywords
        and "MALFORMED" not in keywords
        and result.valid
        and result.status == "signature valid"
        and result.key_status is None
        and not result.problems
        and result.returncode == 0
    )
    if not valid:
        raise SignatureRefused(f"gpg did not report one valid signature (status: {result.status})")
    signer = (result.pubkey_fingerprint or "").upper()
    if not FINGERPRINT_RE.fullmatch(signer):
        raise SignatureRefused("gpg reported no signer fingerprint")
    if signer not in trusted:
        raise SignatureRefused(f"signer {signer} is not a trusted key")
    return signer


class TrustStore:
    """The public keys this node trusts, and signature checks against exactly them."""

    def __init__(self, homedir: Path) -> None:
        self._home = GnupgHome(homedir, autostart=False)
        self._gpg = self._home.gpg
        self._gpg.result_map = {**self._gpg.result_map, "verify": RecordingVerify}

    @property
    def homedir(self) -> Path:
        return self._home.homedir

    def fingerprints(self) -> set[str]:
        """Full primary fingerprints of every trusted key."""
        return {str(key["fingerprint"]) for key in self._gpg.list_keys()}

    def import_public_key(self, armored: str) -> str:
        """Trust one ASCII-armored public key; answer its full primary fingerprint.

        Refused: private key material, anything but exactly one public key block with
        exactly one primary key, and what gpg will not import. Importing a key already
        trusted merges it: that is how its revocation or a new expiry date arrives.
        """
        if not isinstance(armored, str):
            raise TrustedKeyError("A public key must be ASCII-armored text")
        if len(armored) > MAX_PUBLIC_KEY_BYTES:
            raise TrustedKeyError(f"Public key larger than {MAX_PUBLIC_KEY_BYTES} bytes")
        if "PRIVATE KEY" in armored:
            raise TrustedKeyError("Private key material is never accepted; send the public key only")
        if armored.count(PUBLIC_KEY_BEGIN) != 1 or armored.count(ARMOR_BEGIN) != 1:
            raise TrustedKeyError(f"Expected exactly one ASCII-armored public key block ({PUBLIC_KEY_BEGIN})")
        data = armored.encode("utf-8")
        scanned = self._gpg.scan_keys_mem(data)
        if any(key["type"] == "sec" for key in scanned):
            raise TrustedKeyError("Private key material is never accepted; send the public key only")
        if len(scanned) != 1:
            found = "no OpenPGP public key" if not scanned else f"{len(scanned)} keys"
            raise TrustedKeyError(f"Expected one public key, found {found}")
        fingerprint = str(scanned[0]["fingerprint"])
        result = self._gpg.import_keys(data)
        if result.sec_read or fingerprint not in result.fingerprints:
            raise TrustedKeyError(f"gpg did not import the key: {gpg_said(result.stderr)}")
        log.info("trusted public key %s", fingerprint)
        return fingerprint

    def export_public_key(self, fingerprint: str) -> str:
        """The key as this store holds it now (its merged revocations and expiry), ASCII-armored."""
        fingerprint = check_fingerprint(fingerprint)
        armored = str(self._gpg.export_keys(fingerprint))
        if PUBLIC_KEY_BEGIN not in armored:
            raise TrustedKeyNotFound(f"No trusted key {fingerprint}")
        return armored

    def remove(self, fingerprint: str) -> None:
        """Stop trusting a key; later signatures by it are refused as unknown."""
        fingerprint = check_fingerprint(fingerprint)
        if fingerprint not in self.fingerprints():
            raise TrustedKeyNotFound(f"No trusted key {fingerprint}")
        result = self._gpg.delete_keys(fingerprint)
        if fingerprint in self.fingerprints():
            raise GnupgFailure(f"gpg could not remove key {fingerprint}: {result.status}")
        log.info("removed trusted key %s", fingerprint)

    def verify(self, data: bytes, signature: bytes | str, *, trusted: Collection[str] | None = None) -> str:
        """The full primary fingerprint of the one trusted key that signed exactly ``data``.

        ``signature`` is a detached, ASCII-armored signature. ``trusted`` narrows the
        keys accepted for this call (say, the keys registered for one Distribution
        service); by default every key in the store is. Anything else raises
        ``SignatureRefused`` naming the reason.
        """
        # The data goes to gpg as a file in a private directory, so gpg always checks
        # the signature against these bytes and nobody can swap them meanwhile.
        with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
            data_path = Path(scratch) / "data"
            with open(data_path, "wb") as out:
                out.write(data)
            return self.verify_file(data_path, signature, trusted=trusted)

    def verify_file(self, data_path: Path, signature: bytes | str, *, trusted: Collection[str] | None = None) -> str:
        """``verify`` of the bytes in the file ``data_path``, which only this process writes (a
        manifest of tens of MB is checked where it lies, never read into memory)."""
        raw_signature = _check_armored_signature(signature)
        accepted = self.fingerprints()
        if trusted is not None:
            accepted &= {check_fingerprint(f) for f in trusted}
        if not accepted:
            raise SignatureRefused("this node trusts no signing key")
        result: Any = self._gpg.verify_file(
            io.BytesIO(raw_signature), data_filename=str(data_path), extra_args=["--trust-model", "always"]
        )
        return judge(result, accepted)

    def close(self) -> None:
        self._home.close()

    def __enter__(self) -> TrustStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
