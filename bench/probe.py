"""What users of the nodes see while a benchmark pushes: the latency of their everyday calls.

Three threads, one per kind of call, each on its own keep-alive connection, one call after
another with a short pause: a 2.5 KB download from an edge, a 1 KiB upload to the edge's
``artifactory-edge-uploads`` (new bytes each time, at one path), and a status read on the
Distribution service. Every answer is checked; each latency is filed under the phase the
benchmark says it is in (``phase``), so each phase gets its own percentiles.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from common import BenchError

UPLOADS = "artifactory-edge-uploads"
PAUSE = 0.02  # between two calls of one kind
TIMEOUT = 120.0
KINDS = ("download", "upload", "status")


@dataclass(frozen=True)
class Target:
    """Where the probe calls: an edge and the service, with the tokens it needs."""

    edge_port: int
    edge_token: str
    service_port: int
    service_token: str
    status_path: str  # a GET on the service that a release manager polls


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` of 0.99: p99) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Probe:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.phase = "idle"
        self.samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.failure: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seed = os.urandom(2500)

    def seed(self) -> None:
        """The file the downloads fetch, uploaded once before the probe starts."""
        with self._connection(self.target.edge_port) as conn:
            self._call(conn, "PUT", f"/artifactory/{UPLOADS}/probe/seed.bin", self.target.edge_token, self._seed, 201)

    def start(self) -> None:
        calls: dict[str, Callable[[http.client.HTTPConnection], None]] = {
            "download": self._download,
            "upload": self._upload,
            "status": self._status,
        }
        for kind in KINDS:
            port = self.target.service_port if kind == "status" else self.target.edge_port
            thread = threading.Thread(target=self._loop, args=(kind, port, calls[kind]), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT)
        if self.failure is not None:
            raise BenchError(f"the latency probe failed: {self.failure}")

    def _loop(self, kind: str, port: int, call: Callable[[http.client.HTTPConnection], None]) -> None:
        with self._connection(port) as conn:
            while not self._stop.is_set():
                phase, begun = self.phase, time.perf_counter()
                try:
                    call(conn)
                except (OSError, http.client.HTTPException, BenchError) as exc:
                    self.failure = self.failure or f"{kind}: {exc}"
                    return
                self.samples[phase, kind].append(time.perf_counter() - begun)
                time.sleep(PAUSE)

    @staticmethod
    def _connection(port: int) -> contextlib.closing[http.client.HTTPConnection]:
        return contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT))

    @staticmethod
    def _call(
        conn: http.client.HTTPConnection, method: str, path: str, token: str, body: bytes | None, expect: int
    ) -> bytes:
        headers = {"Authorization": f"Bearer {token}"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != expect:
            raise BenchError(f"{method} {path} answered {response.status}: {answer[:200]!r}")
        return answer

    def _download(self, conn: http.client.HTTPConnection) -> None:
        got = self._call(conn, "GET", f"/artifactory/{UPLOADS}/probe/seed.bin", self.target.edge_token, None, 200)
        if got != self._seed:
            raise BenchError("the download's bytes are not the seeded file's")

    def _upload(self, conn: http.client.HTTPConnection) -> None:
        path = f"/artifactory/{UPLOADS}/probe/upload.bin"
        self._call(conn, "PUT", path, self.target.edge_token, os.urandom(1024), 201)

    def _status(self, conn: http.client.HTTPConnection) -> None:
        self._call(conn, "GET", self.target.status_path, self.target.service_token, None, 200)

    def p99(self, phase: str) -> dict[str, tuple[float, int]]:
        """Per kind of call: its p99 in milliseconds during ``phase``, and how many calls were made."""
        found = {}
        for kind in KINDS:
            values = self.samples.get((phase, kind), [])
            found[kind] = (percentile(values, 0.99) * 1000 if values else float("nan"), len(values))
        return found
