"""The JSON log lines' own formatting: timestamps, durations, and access lines written without ``logging``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from repository.http import keys
from repository.logs import LINES_MAX, AccessEntry, JsonAccessLogger, JsonFormatter, JsonHandler, millis, timestamp
from repository.tokens import Principal, Role


def reference(created: float) -> str:
    """The timestamp, formatted from scratch."""
    second = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((created - second) * 1000):03d}Z"


@pytest.mark.parametrize(
    "moments",
    [
        [1796450000.1234, 1796450000.1239, 1796450000.1240],  # the same millisecond, then the next
        [1796450000.5, 1796450001.5, 1796450000.5],  # the same millisecond of other seconds, and back
        [1796450000.999, 1796450001.0, 1796450001.0005, 1796450001.001],  # across a second
        [0.0, 0.0009, 1e-7, 59.9999],
    ],
    ids=["same-millisecond", "same-millisecond-other-second", "second-boundary", "epoch"],
)
def test_timestamps_formatted_once_per_millisecond_equal_those_formatted_afresh(moments: list[float]) -> None:
    assert [timestamp(m) for m in moments] == [reference(m) for m in moments]


@pytest.mark.parametrize("method", ["GET", 'M"X\\', "MÉTHODE"], ids=["plain", "quote-backslash", "non-ascii"])
async def test_an_access_line_written_directly_equals_the_one_logging_writes_whatever_the_method(method: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    direct, plain = JsonHandler(), logging.StreamHandler(io.StringIO())
    direct.setStream(io.StringIO())
    plain.setFormatter(JsonFormatter())
    request = make_mocked_request(method, "/artifactory/r/a%22b.bin")
    request[keys.request_id] = "rid-1"
    access = JsonAccessLogger(logging.getLogger("aiohttp.access"), "")
    try:
        root.setLevel(logging.INFO)
        for handler in (direct, plain):
            root.handlers[:] = [handler]
            access.log(request, web.Response(status=204), 0.00123)
        direct.flush_lines()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    written, logged = (re.sub(r'"ts": "[^"]*"', '"ts": ""', h.stream.getvalue()) for h in (direct, plain))
    assert written == logged  # byte for byte, the time aside
    entry = json.loads(written)
    assert entry["msg"] == f'{method} /artifactory/r/a"b.bin 204' and entry["ms"] == 1.23


def as_logging_writes(number: float) -> str:
    """The ``ms`` text ``JsonAccessLogger`` gives ``logging`` for a duration of ``number`` seconds."""
    return repr(round(number * 1000, 2))


@pytest.mark.parametrize(
    "number",
    [0.0, -0.0, 0.000004999, 0.000005, 0.000015, 0.000025, 0.001, 0.0105, 0.1, 1.0, 59.99999, 123456.789, 9.99e9],
)
def test_the_ms_of_an_access_line_is_written_as_logging_writes_it(number: float) -> None:
    """Two formatters of one number agree (text against text: nothing is timed)."""
    assert millis(number) == as_logging_writes(number)


@given(st.floats(min_value=-1e10, max_value=1e10, allow_nan=False))
def test_the_ms_of_any_duration_below_300_years_is_written_as_logging_writes_it(number: float) -> None:
    assert millis(number) == as_logging_writes(number)


class CountingStream(io.StringIO):
    """A stream that counts the writes it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def counting_handler() -> tuple[JsonHandler, CountingStream]:
    handler, stream = JsonHandler(), CountingStream()
    handler.setStream(stream)
    return handler, stream


def entry(i: int) -> AccessEntry:
    """The fields of the ``i``-th access, whose path is ``/a/<i>``."""
    return ('"aiohttp.access"', f"rid-{i}", "GET", URL(f"/a/{i}"), 200, 10, 0.001, "127.0.0.1", None, 1796450000.0 + i)


def paths(stream: io.StringIO) -> list[str]:
    """The path of each access line written, in order."""
    return [json.loads(line)["path"] for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("count", [0, 1, LINES_MAX - 1])
async def test_access_lines_wait_for_the_delay_and_go_out_in_one_write(count: int) -> None:
    handler, stream = counting_handler()
    for i in range(count):
        handler.queue_access(entry(i))
    assert stream.writes == 0  # queued, not written yet
    for _ in range(500):  # bounded: the delay is far shorter than 500 turns of 10 ms
        if stream.getvalue() or not count:
            break
        await asyncio.sleep(0.01)
    assert stream.writes == (1 if count else 0)
    assert paths(stream) == [f"/a/{i}" for i in range(count)]


@pytest.mark.parametrize("count", [LINES_MAX, LINES_MAX + 1, 2 * LINES_MAX])
async def test_a_full_batch_of_access_lines_is_written_at_once(count: int) -> None:
    handler, stream = counting_handler()
    for i in range(count):
        handler.queue_access(entry(i))
    assert stream.writes == count // LINES_MAX  # each full batch at once; the rest waits
    handler.flush_lines()
    assert paths(stream) == [f"/a/{i}" for i in range(count)]
    handler.flush_lines()  # nothing left: no empty write
    assert stream.writes == count // LINES_MAX + (1 if count % LINES_MAX else 0)


async def test_a_log_line_after_queued_access_lines_is_written_after_them() -> None:
    handler, stream = counting_handler()
    handler.queue_access(entry(0))
    handler.emit(logging.makeLogRecord({"msg": "later", "levelno": logging.INFO, "levelname": "INFO"}))
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["msg"] == "GET /a/0 200" and json.loads(second)["msg"] == "later"
    handler.flush_lines()
    assert stream.writes == 2  # the access line once, then the record


async def test_an_access_line_carries_the_time_it_was_queued_not_the_time_of_its_write() -> None:
    handler, stream = counting_handler()
    handler.queue_access(entry(0))  # queued at 1796450000.0, written now
    handler.flush_lines()
    assert json.loads(stream.getvalue())["ts"] == reference(1796450000.0)


def logged(entry: AccessEntry) -> str:
    """The line ``logging`` writes, through ``JsonFormatter``, for the access ``entry`` holds."""
    logger, request_id, method, url, status, sent, seconds, remote, principal, created = entry
    fields = {
        "method": method,
        "path": url.path,
        "status": status,
        "bytes": sent,
        "ms": round(seconds * 1000, 2),
        "remote": remote,
        "user": getattr(principal, "subject", None),
    }
    record = logging.makeLogRecord(
        {"name": json.loads(logger), "levelname": "INFO", "levelno": logging.INFO, "msg": "%s %s %s",
         "args": (method, url.path, status), "created": created, "request_id": request_id, "fields": fields}
    )  # fmt: skip
    return JsonFormatter().format(record) + "\n"


ACCESSES = st.tuples(
    st.sampled_from(['"aiohttp.access"', '"edge.access"']),
    st.sampled_from(["rid-1", "rid-2", None]),
    st.sampled_from(["GET", "HEAD", 'M"X']),
    st.sampled_from([URL("/a/f.bin"), URL("/a/f.bin?x=1"), URL("/a/%E2%82%AC%20b"), URL('/b/"q"')]),
    st.sampled_from([200, 206, 404]),
    st.sampled_from([0, 4739]),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.sampled_from(["127.0.0.1", "::1", None]),
    st.sampled_from([None, Principal("anonymous", None), Principal("alice", Role.reader), Principal('é"', None)]),
    st.floats(min_value=1796450000, max_value=1796450002, allow_nan=False),
)


@given(st.lists(ACCESSES, max_size=12))
def test_a_batch_of_access_lines_reads_as_logging_writes_each_whatever_its_entries_share(
    entries: list[AccessEntry],
) -> None:
    async def written() -> str:
        handler, stream = counting_handler()
        for entry in entries:
            handler.queue_access(entry)
        handler.flush_lines()
        return stream.getvalue()

    assert asyncio.run(written()) == "".join(map(logged, entries))
