"""Signing a webhook delivery and checking it, against each other: what the service signs, the
receiver's check (the module's and the README's recipe in tests/webhook_receiver.py) accepts, and
any change to the body, the timestamp or the secret is refused, as is a replay past the window."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from distribution.webhook_signing import TOLERANCE, signature, verify
from tests.webhook_receiver import verified

SECRET = "whsec_0123456789abcdef"
NOW = 1_800_000_000


@given(body=st.binary(max_size=4096), secret=st.text(min_size=1, max_size=64))
def test_what_is_signed_verifies_and_the_readme_recipe_agrees(body: bytes, secret: str) -> None:
    header = signature(secret, NOW, body)
    assert header.startswith("v1=") and len(header) == 3 + 64
    assert verify(secret, str(NOW), header, body, NOW)
    headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": header}
    assert verified(secret, headers, body, NOW) == ""


@given(body=st.binary(max_size=1024), flip=st.integers(min_value=0, max_value=1023))
def test_a_body_changed_by_one_bit_is_refused(body: bytes, flip: int) -> None:
    header = signature(SECRET, NOW, body)
    if body:
        changed = bytearray(body)
        changed[flip % len(body)] ^= 1
        assert not verify(SECRET, str(NOW), header, bytes(changed), NOW)
    assert not verify(SECRET, str(NOW), header, body + b" ", NOW)


def test_another_secret_or_timestamp_is_refused() -> None:
    header = signature(SECRET, NOW, b"{}")
    assert not verify(SECRET + "x", str(NOW), header, b"{}", NOW)
    assert not verify(SECRET, str(NOW + 1), header, b"{}", NOW)


def test_a_replay_outside_the_window_is_refused_at_its_edge() -> None:
    header = signature(SECRET, NOW, b"{}")
    for now, ok in [
        (NOW + TOLERANCE - 1, True),
        (NOW + TOLERANCE, True),
        (NOW + TOLERANCE + 1, False),
        (NOW - TOLERANCE, True),
        (NOW - TOLERANCE - 1, False),
    ]:
        assert verify(SECRET, str(NOW), header, b"{}", now) is ok, now
        headers = {"X-Webhook-Timestamp": str(NOW), "X-Webhook-Signature": header}
        assert (verified(SECRET, headers, b"{}", now) == "") is ok, now


def test_malformed_headers_are_refused() -> None:
    header = signature(SECRET, NOW, b"{}")
    for timestamp in ["", "-1", "+1800000000", "1e9", " 1800000000", "1800000000.0", "٣"]:
        assert not verify(SECRET, timestamp, header, b"{}", NOW), timestamp
    for given_header in ["", "v1=", header[:-1], header.upper(), "v0=" + header[3:]]:
        assert not verify(SECRET, str(NOW), given_header, b"{}", NOW), given_header


def test_any_one_of_several_signatures_is_enough() -> None:
    """While a secret is replaced, a sender may sign with both; a receiver knowing either accepts."""
    both = f"{signature('old-secret-0123456', NOW, b'{}')} {signature(SECRET, NOW, b'{}')}"
    assert verify(SECRET, str(NOW), both, b"{}", NOW)


def test_the_readme_recipe_accepts_a_signed_delivery_and_refuses_a_changed_one() -> None:
    """The README's "Webhooks" Python, run as a reader would paste it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Webhooks") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    namespace: dict[str, Any] = {}
    exec(code[: code.index("```")], namespace)  # noqa: S102  (the project's own README)
    genuine = namespace["genuine"]
    now = int(time.time())
    body = b'{"id":"x","type":"bundle.created"}'
    headers = {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": signature(SECRET, now, body)}
    assert genuine(SECRET, headers, body)
    assert not genuine(SECRET, headers, body + b" ")
    assert not genuine("another-secret-0123", headers, body)
    old = {"X-Webhook-Timestamp": str(now - 3600), "X-Webhook-Signature": signature(SECRET, now - 3600, body)}
    assert not genuine(SECRET, old, body)
