"""The signing keys the device trusts, and their rotation.

The GnuPG home ``DIR/gnupg`` holds the keys; ``DIR/keys.json`` says which fingerprints
are trusted now and when that key set was made. Verification always narrows to the
fingerprints in ``keys.json``, so a key imported by a rotation that was cut short is
never trusted. A new key set is accepted only when its document is signed by a key
already trusted and is newer than the held one: neither the control plane nor anyone
between can widen trust or replay a retired set.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from wire.fleet import PublicKey, SigningKeys, decode_keys_document
from wire.signatures import SignatureRefused, TrustStore

from .durable import read_json, write_json

log = logging.getLogger(__name__)


class KeysRefused(Exception):
    """A key set the device does not accept; the message says why."""


class DeviceTrust:
    def __init__(self, data_dir: Path) -> None:
        self.home = data_dir / "gnupg"
        self.state_path = data_dir / "keys.json"

    def state(self) -> dict[str, object]:
        return read_json(self.state_path) or {"created": 0, "digest": "", "fingerprints": []}

    @property
    def fingerprints(self) -> list[str]:
        return list(self.state()["fingerprints"])  # type: ignore[call-overload]

    @property
    def digest(self) -> str:
        return str(self.state()["digest"])

    def install(self, keys: tuple[PublicKey, ...], created: int = 0, digest: str = "") -> None:
        """Trust exactly ``keys`` from now on (at enrollment, or after a verified rotation)."""
        with TrustStore(self.home) as store:
            for key in keys:
                got = store.import_public_key(key.public_key)
                if got != key.fingerprint:
                    raise KeysRefused(f"key {key.fingerprint} is in fact {got}")
        fingerprints = sorted(k.fingerprint for k in keys)
        write_json(self.state_path, {"created": created, "digest": digest, "fingerprints": fingerprints})
        with TrustStore(self.home) as store:  # keys no longer listed go once the new list is durable
            for old in store.fingerprints() - set(fingerprints):
                store.remove(old)

    def rotate(self, answer: SigningKeys) -> list[str]:
        """Accept a new key set if a trusted key signed it and it is newer; answer its fingerprints."""
        data = answer.document.encode("utf-8")
        try:
            with TrustStore(self.home) as store:
                signer = store.verify(data, answer.signature, trusted=self.fingerprints)
        except SignatureRefused as exc:
            raise KeysRefused(f"new signing keys refused: {exc.reason}") from None
        created, keys = decode_keys_document(answer.document)
        held = int(self.state()["created"])  # type: ignore[call-overload]
        if created <= held:
            raise KeysRefused(f"new signing keys refused: made at {created}, not after the held set ({held})")
        self.install(keys, created, hashlib.sha256(data).hexdigest())
        log.info("signing keys rotated (signed by %s): now trusting %s", signer, ", ".join(k.fingerprint for k in keys))
        return [k.fingerprint for k in keys]

    def verify(self, data: bytes, signature: str) -> str:
        """The signer of ``data`` if it is a key trusted now; else ``SignatureRefused``."""
        with TrustStore(self.home) as store:
            return store.verify(data, signature, trusted=self.fingerprints)
