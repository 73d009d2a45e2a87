"""The service's public signing keys as devices fetch them (``wire.fleet.KEYS``).

A device trusts what the Distribution service signs; when the service's keys change
(an upload, a rotation), devices learn it from the digest every check-in answers, fetch
the new document, and accept it only with a signature by a key they already trust.

The document is made once per key set, not per call: every check-in answers its digest,
so the key set is looked at (a gpg listing, in a thread) at most every ``RECHECK_SECONDS``
and the document signed again only when the set changed. Its ``created`` is the newest
key's creation time, so replicas and restarts with the same keys answer the same
document and digest, and devices do not fetch again for nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime

from distribution.signing import Signer
from wire.fleet import PublicKey, SigningKeys, encode_keys_document

# How long a key set is answered before the signer is asked again for its keys.
RECHECK_SECONDS = 10.0


@dataclass(frozen=True)
class PublishedKeys:
    keys: tuple[PublicKey, ...]
    created: int  # ms
    signed: SigningKeys
    digest: str  # sha256 of the document, what check-ins answer as ``keys_digest``


def _ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def publish(signer: Signer, before: PublishedKeys | None) -> PublishedKeys:
    """The key document of ``signer``'s keys now, signed by its default key; ``before`` again
    when the keys did not change (blocking: gpg runs)."""
    infos = signer.keys()
    fingerprints = tuple(k.fingerprint for k in infos)
    if before is not None and tuple(k.fingerprint for k in before.keys) == fingerprints:
        return before
    keys = tuple(PublicKey(k.fingerprint, signer.export_public(k.alias)) for k in infos)
    created = max(_ms(k.created) for k in infos)
    if before is not None:  # a set that changed is never older than the one devices hold
        created = max(created, before.created + 1)
    document = encode_keys_document(keys, created)
    signature = signer.sign(document.encode("utf-8"))
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
    return PublishedKeys(keys, created, SigningKeys(document, signature), digest)


class KeysDocument:
    """The current ``PublishedKeys``, looked at again at most every ``RECHECK_SECONDS``."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self._current: PublishedKeys | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> PublishedKeys:
        found = self._current
        if found is not None and time.monotonic() - self._checked < RECHECK_SECONDS:
            return found
        async with self._lock:
            if self._current is None or time.monotonic() - self._checked >= RECHECK_SECONDS:
                self._current = await asyncio.to_thread(publish, self._signer, self._current)
                self._checked = time.monotonic()
            return self._current
