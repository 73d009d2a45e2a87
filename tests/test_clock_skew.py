"""Clock skew of minutes between the Distribution service and an edge.

The service stamps what it sends with its own clock: the manifest's ``created``, the
signature's creation time, and the creation time of its key (made on its first start).
What an operator relies on: none of that decides anything on the edge. A bundle from a
service whose clock runs minutes ahead or behind is accepted and committed, and an
uncommitted transaction lives exactly ``transaction_ttl`` seconds by the edge's own clock.
(Signatures alone are covered by tests/test_signatures.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.app import create_app
from edge.keys import transactions_key
from repository.catalog import now_ms
from tests.conftest import make_settings
from tests.gpg_keys import DAY, KeyFactory
from tests.test_edge_transactions import (
    FILES,
    REPO,
    commit,
    download,
    manifest_of,
    put_blob,
    sha256,
    staging_of,
    start,
    status_of,
    token,
    trust,
)
from wire.manifest import encode
from wire.timestamps import utc_timestamp

TTL = 2  # seconds an uncommitted transaction lives on the edge
SKEW_MINUTES = 10
# A hang guard, not a speed check: the edge's expiry task runs every second at this TTL.
GIVE_UP = TTL + 30.0


def ms_of(iso: str) -> int:
    """Milliseconds since the epoch of ``2026-11-22T10:00:00.000Z``."""
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@pytest.mark.parametrize("skew", [SKEW_MINUTES, -SKEW_MINUTES], ids=["service-ahead", "service-behind"])
async def test_a_bundle_from_a_service_minutes_ahead_or_behind_is_accepted_expires_by_the_edge_clock_and_commits(
    aiohttp_client: Any, tmp_path: Path, key_factory: KeyFactory, skew: int
) -> None:
    # everything the service stamps, stamped by a clock `skew` minutes off the edge's
    service_days_ago = -skew * 60 / DAY
    key = key_factory.make_key("Skewed Service <skewed@example.com>", created_days_ago=service_days_ago)
    service_now = datetime.now(UTC) + timedelta(minutes=skew)
    manifest = dataclasses.replace(manifest_of(FILES), created=utc_timestamp(service_now))
    data = encode(manifest)
    body = {"manifest": data.decode(), "signature": key_factory.sign(key, data, days_ago=service_days_ago).decode()}

    client = await aiohttp_client(create_app(make_settings(tmp_path, transaction_ttl=TTL)))
    await trust(client, key)
    headers = await token(client, "distributor")
    transactions = client.server.app[transactions_key]

    before = now_ms()
    started = await start(client, body, headers, status=201)
    after = now_ms()
    tid = started["transaction_id"]
    assert started["state"] == "OPEN"
    # the expiry is the edge's start time plus its TTL, whatever the manifest says
    expires = ms_of(started["expires"])
    assert before + TTL * 1000 <= expires <= after + TTL * 1000, (started["expires"], before, after)
    await put_blob(client, tid, FILES["README.md"], headers)
    assert await transactions.expire(now=expires - 1) == []
    assert (await status_of(client, tid, headers))["state"] == "OPEN"

    # the edge's own expiry task ends it, not before its TTL has passed on the edge's clock
    deadline = time.monotonic() + GIVE_UP
    while (await status_of(client, tid, headers))["state"] == "OPEN":
        if time.monotonic() >= deadline:
            pytest.fail(f"transaction still OPEN {GIVE_UP:.0f} s after start with a TTL of {TTL} s")
        await asyncio.sleep(0.1)
    assert now_ms() >= expires
    assert (await status_of(client, tid, headers))["state"] == "EXPIRED"
    assert not staging_of(client, tid).exists()

    # the same bundle again: reopened with a fresh TTL from the edge's clock, uploaded, committed
    before = now_ms()
    reopened = await start(client, body, headers, status=201)
    assert reopened["state"] == "OPEN" and ms_of(reopened["expires"]) >= before + TTL * 1000
    by_sha256 = {sha256(d): d for d in FILES.values()}
    for missing in reopened["missing"]:
        resp = await put_blob(client, tid, by_sha256[missing], headers)
        assert resp.status in (200, 201), await resp.text()
    done = await commit(client, tid, headers)
    assert done["state"] == "COMMITTED"
    for path, content in FILES.items():
        assert await download(client, f"{REPO}/app/1.0.0/{path}") == (200, content)
    # a committed transaction never expires, however much time passes on either clock
    assert await transactions.expire(now=now_ms() + 365 * DAY * 1000) == []
    assert (await status_of(client, tid, headers))["state"] == "COMMITTED"
