"""Finished requests summed up in batches (edge/finished.py): each request is recorded and counted
once, at the queue's bound or after its delay, whatever reads the sums (an audit write, a scrape)
settles the queue first, a record keeps the time its request finished, and one request's
bookkeeping failing loses no other's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from edge import finished
from edge.access.audit_store import AuditQuery
from edge.finished import FINISHED_MAX, Finished, finished_key
from edge.keys import audit_trail_key
from repository.catalog import now_ms
from tests.conftest import UPLOADS, upload
from tests.test_metrics import requests_of, scrape

URL = f"/artifactory/{UPLOADS}/f.bin"


@pytest.fixture
async def quiet(edge: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Finished]:
    """The edge with one file, its queue empty and settled only by its bound or a reader."""
    monkeypatch.setattr(finished, "FINISHED_DELAY", 3600.0)
    await upload(edge, "f.bin", b"four")
    await edge.app[audit_trail_key].flush()
    return edge, edge.app[finished_key]


async def downloads_recorded(edge: Any) -> int:
    rows = await edge.app[audit_trail_key].store.query(AuditQuery(action="download", limit=10_000))
    return len(rows)


@pytest.mark.parametrize("count", [0, 1, FINISHED_MAX - 1, FINISHED_MAX, FINISHED_MAX + 1])
async def test_requests_are_handed_over_at_the_bound_or_when_read_each_once(quiet: Any, count: int) -> None:
    edge, queue = quiet
    trail = edge.app[audit_trail_key]
    for _ in range(count):
        assert (await edge.get(URL)).status == 200
    # a full queue is settled at once; what is left waits for its delay or a reader
    assert (queue.queued, trail.pending) == (count % FINISHED_MAX, count - count % FINISHED_MAX)
    assert requests_of(await scrape(edge), "GET", "download", 200) == count
    await trail.flush()
    assert (queue.queued, trail.pending) == (0, 0)  # the scrape itself was written too
    assert await downloads_recorded(edge) == count


async def test_a_short_queue_is_settled_after_its_delay_with_nobody_reading(edge: Any) -> None:
    await upload(edge, "f.bin", b"four")
    queue, trail = edge.app[finished_key], edge.app[audit_trail_key]
    assert (await edge.get(URL)).status == 200
    for _ in range(500):  # bounded: the delay is far shorter than 500 turns of 10 ms
        if queue.queued == 0:
            break
        await asyncio.sleep(0.01)
    assert queue.queued == 0 and trail.pending == 2  # the upload and the download


async def test_a_record_keeps_the_time_its_request_finished_not_the_time_it_was_settled(quiet: Any) -> None:
    edge, _ = quiet
    before = now_ms()
    assert (await edge.get(URL)).status == 200
    after = now_ms()
    await asyncio.sleep(0.02)  # the queue is settled later than the request finished
    await edge.app[audit_trail_key].flush()
    (record,) = await edge.app[audit_trail_key].store.query(AuditQuery(action="download"))
    assert before <= record.time <= after < now_ms()


async def test_one_requests_bookkeeping_failing_loses_no_other_request(
    quiet: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    edge, _ = quiet
    record = finished.record_request

    def failing_for_missing_files(*args: Any, **kwargs: Any) -> None:
        if args[4] == 404:  # (trail, request, ctx, response, status, ...)
            raise RuntimeError("broken")
        record(*args, **kwargs)

    monkeypatch.setattr(finished, "record_request", failing_for_missing_files)
    assert (await edge.get(f"/artifactory/{UPLOADS}/missing.bin")).status == 404
    assert (await edge.get(URL)).status == 200
    with caplog.at_level(logging.ERROR, logger="edge.finished"):
        await edge.app[audit_trail_key].flush()
    assert await downloads_recorded(edge) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"recording the finished request GET /artifactory/{UPLOADS}/missing.bin failed"
    ]
    # its counts were added before its record failed
    assert requests_of(await scrape(edge), "GET", "download", 404) == 1
