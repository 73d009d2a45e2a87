"""The two-phase transaction protocol between the Distribution service and an edge.

docs/transactions.md describes each call; this module holds what both sides must spell
the same way: the URLs, the start request's fields, the states a transaction answers,
the resume header and range, and the answer of a bundle removal still under way. The
edge routes by these paths (with route patterns for the ids) and the service calls them,
so neither can drift from the other. The body of a blob batch has a module of its own
(``wire.batch``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from .errors import InvalidInput

DISTRIBUTION_API = "/artifactory/api/distribution"
TRANSACTIONS = f"{DISTRIBUTION_API}/transactions"
BUNDLES = f"{DISTRIBUTION_API}/bundles"
TRUSTED_KEYS = "/artifactory/api/security/keys/trusted"
# A transaction's id is the sha256 of its manifest's bytes, and a blob's name is its sha256.
SHA256_RE = re.compile(r"[0-9a-f]{64}")

# A start request's body is the canonical manifest itself, the bytes that were signed, of this
# media type and with a Content-Length, so an edge can stream it to disk and read it a page at
# a time; the armored detached signature rides in a header, base64-encoded (armor has line
# breaks, which a header cannot hold). The bytes are JSON, but the type is not ``+json``: they
# must arrive exactly as signed, never parsed and written again by a tool that knows JSON.
MANIFEST_MEDIA_TYPE = "application/vnd.release-bundle-manifest"
SIGNATURE_HEADER = "X-Manifest-Signature"
MAX_SIGNATURE_HEADER = 16 * 1024
# The small form, for scripts and curl: a JSON object with the manifest as a string (its UTF-8
# bytes are what was signed) and the armored signature.
START_FIELDS = frozenset({"manifest", "signature"})

# The blobs an edge is missing come a page at a time, in sha256 order: the first page in the
# start answer and the status (``missing``), the next from ``GET missing_path(tx)`` with
# ``after`` set to the answer's ``missing_next`` (null: there are no more) and ``limit``.
MISSING_PAGE = 1000
MAX_MISSING_PAGE = 10_000

# A bundle's SBOM (the manifest's optional ``sbom`` field names its sha256 and size) travels as one
# more blob of the transaction and is served, by the service and by every edge, at
# ``<api>/release_bundle/{name}/{version}/sbom`` as this media type; the edge's API is here.
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
RELEASE_BUNDLES = f"{DISTRIBUTION_API}/release_bundle"

# Bytes of a blob the edge holds: the answer to HEAD on a blob, and to a resume at the wrong offset.
RECEIVED_BYTES = "X-Received-Bytes"
CONTENT_RANGE_RE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
# The status of a bundle removal that answered 202: part of the bundle is removed, call again.
REMOVAL_IN_PROGRESS = "in_progress"


class TransactionState(StrEnum):
    OPEN = "OPEN"
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"


def transaction_path(tx_id: str) -> str:
    """``GET`` answers the transaction's state; with a route pattern for ``tx_id``, the edge's route."""
    return f"{TRANSACTIONS}/{tx_id}"


def commit_path(tx_id: str) -> str:
    return f"{transaction_path(tx_id)}/commit"


def abort_path(tx_id: str) -> str:
    return f"{transaction_path(tx_id)}/abort"


def missing_path(tx_id: str) -> str:
    """``GET`` a page of the blobs the edge is missing (``missing_query``)."""
    return f"{transaction_path(tx_id)}/missing"


def missing_query(after: str, limit: int = MISSING_PAGE) -> dict[str, str]:
    return {"after": after, "limit": str(limit)}


def parse_missing_query(query: Mapping[str, str]) -> tuple[str, int]:
    """``(after, limit)`` of a missing-page request; anything else is a 400."""
    unknown = sorted(set(query) - {"after", "limit"})
    if unknown:
        raise InvalidInput(f"Unknown query parameter(s): {', '.join(unknown)}")
    after, limit = query.get("after", ""), query.get("limit", str(MISSING_PAGE))
    if after and not SHA256_RE.fullmatch(after):
        raise InvalidInput("'after' must be a sha256 (64 lowercase hex digits)")
    if not limit.isascii() or not limit.isdigit() or len(limit) > 6 or not 1 <= int(limit) <= MAX_MISSING_PAGE:
        raise InvalidInput(f"'limit' must be an integer from 1 to {MAX_MISSING_PAGE}")
    return after, int(limit)


def batch_path(tx_id: str) -> str:
    """``POST`` a blob batch (``wire.batch``)."""
    return f"{transaction_path(tx_id)}/blobs"


def blob_path(tx_id: str, sha256: str) -> str:
    """``PUT`` one blob, ``HEAD`` how much of it the edge holds."""
    return f"{batch_path(tx_id)}/{sha256}"


def bundle_path(name: str, version: str) -> str:
    """``DELETE`` a committed bundle from an edge, part of it per request (``removal_body``)."""
    return f"{BUNDLES}/{quote(name, safe='')}/{quote(version, safe='')}"


# -- relays (docs/tiers.md): a parent edge runs the transaction above to a child edge --------

RELAYS = f"{DISTRIBUTION_API}/relays"
# The body of a relay request: the committed transaction to relay, and the child's name, base URL
# and token (the one the Distribution service holds for that child).
RELAY_FIELDS = frozenset({"transaction_id", "child", "url", "token"})


class RelayState(StrEnum):
    RUNNING = "RUNNING"
    COMMITTED = "COMMITTED"  # the child committed and publishes exactly what the parent does
    FAILED = "FAILED"
    ABORTED = "ABORTED"


def relay_path(tx_id: str, child: str) -> str:
    """A relay's status (GET); the child's name is a repository-key-like edge name."""
    return f"{RELAYS}/{tx_id}/{child}"


def relay_abort_path(tx_id: str, child: str) -> str:
    return f"{relay_path(tx_id, child)}/abort"


def start_headers(length: int, signature: str) -> dict[str, str]:
    """The headers of a start request whose body is the manifest's ``length`` bytes."""
    encoded = base64.b64encode(signature.encode("ascii")).decode("ascii")
    return {"Content-Type": MANIFEST_MEDIA_TYPE, "Content-Length": str(length), SIGNATURE_HEADER: encoded}


def signature_from_header(value: str | None) -> str:
    """The armored signature a start request's header carries; missing or malformed is a 400."""
    if not value:
        raise InvalidInput(f"A start request needs its manifest's signature in {SIGNATURE_HEADER} (base64)")
    if len(value) > MAX_SIGNATURE_HEADER:
        raise InvalidInput(f"{SIGNATURE_HEADER} is longer than {MAX_SIGNATURE_HEADER} characters")
    try:
        return base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidInput(f"{SIGNATURE_HEADER} must be the armored signature, base64-encoded") from None


@dataclass(frozen=True)
class Removal:
    """How far a bundle's removal from an edge has got: ``removed`` of its ``total`` files."""

    removed: int
    total: int

    @property
    def done(self) -> bool:
        return self.removed >= self.total


def removal_body(removal: Removal) -> dict[str, Any]:
    """The answer (202) to a bundle DELETE that removed part of the bundle: call again. The one
    that removes the rest answers 204, and once the bundle is gone a DELETE answers 404."""
    return {"status": REMOVAL_IN_PROGRESS, "removed": removal.removed, "total": removal.total}


def parse_removal(body: Any) -> Removal:
    """A 202's body as a ``Removal``; anything else is InvalidInput."""
    if not isinstance(body, dict) or set(body) != {"status", "removed", "total"}:
        raise InvalidInput("a removal in progress answers exactly the fields status, removed, total")
    removed, total = body["removed"], body["total"]
    if body["status"] != REMOVAL_IN_PROGRESS or not all(type(n) is int and n >= 0 for n in (removed, total)):
        raise InvalidInput(f"a removal in progress answers status {REMOVAL_IN_PROGRESS!r} and two counts")
    if removed >= total:
        raise InvalidInput(f"a removal in progress answers fewer files removed than its total, not {removed}/{total}")
    return Removal(removed, total)


def content_range(offset: int, size: int) -> str:
    """The ``Content-Range`` of a resumed upload: from ``offset`` to the blob's last byte."""
    return f"bytes {offset}-{size - 1}/{size}"


def parse_content_range(header: str) -> tuple[int, int, int]:
    """``bytes first-last/size`` as ``(first, last, size)``; anything else is a 400."""
    match = CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise InvalidInput("Content-Range must be 'bytes first-last/size'")
    first, last, total = (int(g) for g in match.groups())
    return first, last, total
