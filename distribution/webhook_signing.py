"""Signing a webhook delivery and checking one: the sender's half and the receiver's, side by side.

The Standard Webhooks / Stripe convention: the signed bytes are ``timestamp + "." + body``,
the key is the subscription's secret, the MAC is HMAC-SHA256 in hex, sent as
``X-Webhook-Signature: v1=<hex>``. The timestamp is signed so that a captured delivery
cannot be replayed later: a receiver refuses one whose timestamp is outside its window.
Kept free of server code, so a receiver written in Python can copy ``verify`` as it is.
"""

from __future__ import annotations

import hashlib
import hmac

ID_HEADER = "X-Webhook-Id"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
EVENT_HEADER = "X-Webhook-Event"
SCHEME = "v1"
# seconds a delivery's timestamp may be from the receiver's clock (the README's recipe)
TOLERANCE = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Webhook-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, signature_header: str, body: bytes, now: float, tolerance: int = TOLERANCE
) -> bool:
    """Whether ``body`` was signed with ``secret`` at ``timestamp``, within ``tolerance`` seconds of
    ``now``. The header may carry several space-separated signatures (one per secret while a
    secret is replaced): any one matching is enough. Compared in constant time."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, given) for given in signature_header.split())
