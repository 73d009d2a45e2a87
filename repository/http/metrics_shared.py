"""Metrics of a node served by several worker processes (``edge serve --workers N``).

A scrape reaches whichever worker the kernel hands its connection to, so every worker
answers for the whole node: each writes its counts (requests, durations, body bytes, its
own counters) to ``<dir>/worker-<n>.json`` every ``SNAPSHOT_SECONDS`` and just before it
answers a scrape, and a scrape answers the sums over every worker's file. Another worker's
counts are at most ``SNAPSHOT_SECONDS`` old; gauges read from the database at the scrape are
the node's already and are not summed.

Counters never go down: a restarted worker starts from the counts its number last wrote, and
the node's first worker clears the files of an earlier run at its start, so the node's
counters start from zero like a single process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .metrics import Counters, HttpMetrics, RequestMetrics, _Route, metrics_key

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 1.0


def snapshot(metrics: HttpMetrics) -> dict[str, Any]:
    """This process's counts, as JSON."""
    routes = {r: [s.buckets, s.seconds, s.sent] for r, s in metrics.requests.routes.items()}
    return {
        "requests": [[*key, count] for key, count in metrics.requests.requests.items()],
        "routes": routes,
        "counters": {c.name: [[*labels, value] for labels, value in c.values.items()] for c in metrics.own_counters},
    }


def add(requests: RequestMetrics, counters: dict[str, Counters], counts: dict[str, Any]) -> None:
    """Add one snapshot's counts into ``requests`` and ``counters`` (by family name)."""
    for method, route, status, count in counts.get("requests", []):
        key = (method, route, int(status))
        requests.requests[key] = requests.requests.get(key, 0) + count
    for route, (buckets, seconds, sent) in counts.get("routes", {}).items():
        stats = requests.routes.get(route)
        if stats is None:
            stats = requests.routes[route] = _Route()
        stats.buckets = [a + b for a, b in zip(stats.buckets, buckets, strict=True)]
        stats.seconds += seconds
        stats.sent += sent
    for name, rows in counts.get("counters", {}).items():
        family = counters.get(name)
        if family is not None:
            for *labels, value in rows:
                family.inc(tuple(labels), value)


class SharedMetrics:
    """What one worker adds to its service's metrics so that any worker answers for the node."""

    def __init__(self, metrics: HttpMetrics, directory: Path, worker: int) -> None:
        self.metrics, self.directory, self.worker = metrics, directory, worker
        self.path = directory / f"worker-{worker}.json"

    async def write(self) -> None:
        """This worker's counts to its file: read on the event loop (which alone changes them), written
        from a thread."""
        self.metrics.settle()
        await asyncio.to_thread(self._write, json.dumps(snapshot(self.metrics)))

    def _write(self, text: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.path)

    def restore(self) -> None:
        """A restarted worker goes on from the counts its number last wrote."""
        counts = _read(self.path)
        if counts is not None:
            by_name = {c.name: c for c in self.metrics.own_counters}
            add(self.metrics.requests, by_name, counts)

    def clear(self) -> None:
        """At the node's start: the counts of an earlier run go."""
        if self.directory.is_dir():
            for leftover in self.directory.glob("worker-*.json"):
                leftover.unlink(missing_ok=True)

    async def registry(self) -> CollectorRegistry:
        """The node's metrics: every worker's counts summed (this one's as they are now)."""
        await self.write()
        requests = RequestMetrics()
        counters = {c.name: Counters(c.name, c.documentation, c.labels) for c in self.metrics.own_counters}
        for counts in await asyncio.to_thread(self._read_all):
            add(requests, counters, counts)
        registry = CollectorRegistry()
        for collector in (requests, *counters.values(), *self.metrics.states):
            registry.register(collector)
        return registry

    def _read_all(self) -> list[dict[str, Any]]:
        found = (_read(path) for path in sorted(self.directory.glob("worker-*.json")))
        return [counts for counts in found if counts is not None]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a worker killed mid-write leaves its previous file; this is another
        log.warning("metrics: cannot read %s: %s", path, exc)
        return None
    return found if isinstance(found, dict) else None


def setup_shared_metrics(app: web.Application, directory: Path, worker: int, *, starts_node: bool) -> None:
    """Make worker ``worker``'s scrapes answer for the node; after the service added its metrics."""

    async def shared_ctx(app: web.Application) -> AsyncIterator[None]:
        shared = SharedMetrics(app[metrics_key], directory, worker)
        if starts_node:
            await asyncio.to_thread(shared.clear)
        else:
            await asyncio.to_thread(shared.restore)
        app[metrics_key].shared = shared
        task = asyncio.create_task(_write_forever(shared), name="metrics-snapshots")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await shared.write()

    app.cleanup_ctx.append(shared_ctx)


async def _write_forever(shared: SharedMetrics) -> None:
    while True:
        await asyncio.sleep(SNAPSHOT_SECONDS)
        try:
            await shared.write()
        except OSError as exc:
            log.warning("metrics: cannot write %s: %s", shared.path, exc)
