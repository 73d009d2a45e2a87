"""Uploads a transaction's abort (or their own sender) cuts off: a clear answer, no traceback.

An abort may land while blobs of the transaction are still arriving: a large one read
straight from its socket, a small one through aiohttp, or a batch. Each such upload
answers 409 saying the transaction was aborted, the abort frees what was staged only
once those uploads have let go of it, and nothing on the way is logged as an error.
A sender that goes away mid-upload is an ordinary event too, logged in one line.
The edge runs as a real process (``edge serve``), and its log is read as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.services import EdgeProcess
from tests.edge_setup import distributor_token, trust
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import TX, manifest_of, sha256, signed

MiB = 1024 * 1024
BLOBS = {
    "large": os.urandom(4 * MiB + 11),  # read straight from the socket (edge/raw_body.py)
    "small": os.urandom(600_000),  # read through aiohttp
}


class PartialUpload:
    """A request from a raw socket that declares its whole body but sends only ``sent`` bytes of it."""

    def __init__(self, port: int, method: str, path: str, headers: dict[str, str], body: bytes, sent: int) -> None:
        self.port, self.method, self.path, self.headers = port, method, path, headers
        self.body, self.sent = body, sent
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def begin(self) -> PartialUpload:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(self.body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + self.body[: self.sent])
        await self.writer.drain()
        return self

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """The status and JSON body the edge answers without waiting for the rest of the body."""
        assert self.reader is not None and self.writer is not None
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout=30)  # a hang guard
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            body = await self.reader.readexactly(int(headers["content-length"]))
            return int(lines[0].split()[1]), json.loads(body)
        finally:
            self.writer.close()

    def vanish(self) -> None:
        """Go away as a crashed sender does: a reset, nothing more."""
        assert self.writer is not None
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()


class Pushing:
    """A distributor's view of one edge process: an open transaction of BLOBS, and what it stages."""

    def __init__(self, edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory) -> None:
        self.edge = edge
        trust(edge, keys.alice.public)
        self.headers = {"Authorization": f"Bearer {distributor_token(edge)}"}
        self.session = requests.Session()
        self.session.headers.update(self.headers)
        started = self.call("POST", TX, json=signed(key_factory, keys.alice, manifest_of(BLOBS)))
        assert started.status_code == 201, started.text
        self.tid: str = started.json()["transaction_id"]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.edge.url + path, timeout=60, **kwargs)

    def url(self, data: bytes) -> str:
        return f"{TX}/{self.tid}/blobs/{sha256(data)}"

    async def partial(self, method: str, path: str, body: bytes) -> PartialUpload:
        """Half of ``body`` sent, and a moment for the edge to take the upload in (a hang guard's
        worth on loopback), so what follows lands while the rest is awaited."""
        assert self.edge.port is not None
        upload = await PartialUpload(self.edge.port, method, path, self.headers, body, len(body) // 2).begin()
        await asyncio.sleep(0.5)
        return upload

    def received(self, data: bytes) -> int:
        answer = self.call("HEAD", self.url(data))
        assert answer.status_code == 200, answer.status_code
        return int(answer.headers["X-Received-Bytes"])

    def state(self) -> str:
        return str(self.call("GET", f"{TX}/{self.tid}").json()["state"])

    def staging(self) -> Path:
        return self.edge.data_dir / "staging" / self.tid

    def stored(self, data: bytes) -> bool:
        return any((self.edge.data_dir / "blobs").rglob(sha256(data)))

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.edge.log_path.read_text().splitlines() if line.startswith("{")]

    def quiet(self) -> None:
        """Nothing logged as an error or with a traceback: an abort and a vanished sender are not faults."""
        loud = [e for e in self.log_lines() if e["level"] in ("error", "critical") or "exc" in e]
        assert not loud, loud
        assert "No such file or directory" not in self.edge.log_path.read_text()

    async def logged(self, words: str) -> dict[str, Any]:
        """The first log line that says ``words``, once the edge has written it."""
        for _ in range(300):
            found = [e for e in self.log_lines() if words in e["msg"]]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        pytest.fail(f"the edge never logged {words!r}")  # a hang guard, not a speed check


@pytest.fixture
def pushing(edge_server: EdgeProcess, keys: KeySet, key_factory: KeyFactory) -> Pushing:
    return Pushing(edge_server, keys, key_factory)


def batch_of(data: bytes) -> bytes:
    return json.dumps([sha256(data)]).encode() + b"\n" + data


@pytest.mark.parametrize("kind", ["large", "small"])
async def test_a_blob_upload_cut_off_by_an_abort_answers_409_and_the_staging_is_freed_quietly(
    pushing: Pushing, kind: str
) -> None:
    data = BLOBS[kind]
    upload = await pushing.partial("PUT", pushing.url(data), data)
    aborted = pushing.call("POST", f"{TX}/{pushing.tid}/abort")
    assert aborted.status_code == 200, aborted.text
    status, body = await upload.answer()
    assert status == 409, body
    (error,) = body["errors"]
    assert f"Transaction {pushing.tid} was aborted while this upload was under way" in error["message"]
    assert pushing.state() == "ABORTED"
    assert not pushing.staging().exists() and not pushing.stored(data)
    pushing.quiet()


async def test_a_batch_cut_off_by_an_abort_answers_409_and_keeps_nothing(pushing: Pushing) -> None:
    data = BLOBS["small"]
    upload = await pushing.partial("POST", f"{TX}/{pushing.tid}/blobs", batch_of(data))
    assert pushing.call("POST", f"{TX}/{pushing.tid}/abort").status_code == 200
    status, answer = await upload.answer()
    assert status == 409 and "was aborted while this upload was under way" in answer["errors"][0]["message"], answer
    assert not pushing.stored(data)
    pushing.quiet()


async def test_an_upload_to_a_transaction_aborted_before_it_began_is_a_409(pushing: Pushing) -> None:
    assert pushing.call("POST", f"{TX}/{pushing.tid}/abort").status_code == 200
    for method, path, body in [
        ("PUT", pushing.url(BLOBS["small"]), BLOBS["small"]),
        ("POST", f"{TX}/{pushing.tid}/blobs", batch_of(BLOBS["small"])),
    ]:
        answer = pushing.call(method, path, data=body)
        assert answer.status_code == 409 and "is ABORTED" in answer.json()["errors"][0]["message"], answer.text
    pushing.quiet()


@pytest.mark.parametrize("kind", ["large", "small"])
async def test_a_sender_that_goes_away_mid_upload_is_one_log_line_and_what_arrived_is_kept(
    pushing: Pushing, kind: str
) -> None:
    data = BLOBS[kind]
    upload = await pushing.partial("PUT", pushing.url(data), data)
    upload.vanish()
    line = await pushing.logged(f"upload of blob {sha256(data)} to transaction {pushing.tid} cut off")
    assert "the sender went away" in line["msg"] and line["level"] == "info"
    held = pushing.received(data)
    assert 0 < held <= len(data) // 2
    resume = {"Content-Range": f"bytes {held}-{len(data) - 1}/{len(data)}"}
    rest = pushing.call("PUT", pushing.url(data), data=data[held:], headers=resume)
    assert rest.status_code == 201, rest.text
    pushing.quiet()


async def test_a_batch_whose_sender_goes_away_is_one_log_line_and_the_transaction_goes_on(pushing: Pushing) -> None:
    upload = await pushing.partial("POST", f"{TX}/{pushing.tid}/blobs", batch_of(BLOBS["small"]))
    upload.vanish()
    line = await pushing.logged(f"blob batch for transaction {pushing.tid} cut off")
    assert "the sender went away" in line["msg"]
    for data in BLOBS.values():
        assert pushing.call("PUT", pushing.url(data), data=data).status_code == 201
    committed = pushing.call("POST", f"{TX}/{pushing.tid}/commit")
    assert committed.status_code == 200 and committed.json()["state"] == "COMMITTED"
    pushing.quiet()
