"""Prometheus metrics of a service, served at ``GET /metrics`` in the text format.

Each app has a registry of its own (never prometheus_client's global one), so several
apps in one process never share or collide. Request metrics are counted by
``metrics_middleware``; state a service keeps in its database (transactions, jobs) is
read just before each scrape by ``StateGauges`` that the service adds.

Counts live in plain dicts that only the event loop's thread touches, and become metric
families when scraped: a request pays a few dict updates, not prometheus_client's locks
and per-sample objects.

Labels stay bounded whatever clients send: ``route`` is the name of the route that
matched in the service's route table (``unmatched`` when none did), never the path;
``method`` is one of the methods the services know, else ``other``; ``status`` is a
status the service answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from repository.logs import current_request_id
from repository.settings import ServiceSettings
from repository.tokens import Role

from .auth import require_role
from .middlewares import Handler
from .request_ids import begin_request

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
# Seconds; downloads of large files take minutes, so the buckets reach that far.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A scrape waits this long for the database before it leaves the state gauges out.
STATE_TIMEOUT = 5.0
# The status of a request whose client went away before it was answered (nginx's choice).
CLIENT_CLOSED = 499

Rows = Iterable[tuple[Sequence[str], float]]


class Counters(Collector):
    """One counter family (``<name>_total``), by label values; updated on the event loop only."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def declare(self, labels: tuple[str, ...]) -> None:
        """A series that exists at 0 before anything happened, so rates start from the beginning."""
        self.values.setdefault(labels, 0.0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labels)


class _Route:
    __slots__ = ("buckets", "seconds", "sent")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one: beyond every bound
        self.seconds = 0.0
        self.sent = 0


class RequestMetrics(Collector):
    """Requests by method, route and status; their duration and body bytes by route."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.routes: dict[str, _Route] = {}

    def observe(self, method: str, route: str, status: int, seconds: float, sent: int) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = _Route()
        stats.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        stats.seconds += seconds
        stats.sent += sent

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests, duration, body = self._families()
        for (method, route, status), count in list(self.requests.items()):
            requests.add_metric([method, route, str(status)], count)
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for route, stats in list(self.routes.items()):
            cumulative, total = [], 0
            for bound, count in zip(bounds, stats.buckets, strict=True):
                total += count
                cumulative.append((bound, float(total)))
            duration.add_metric([route], cumulative, stats.seconds)
            body.add_metric([route], stats.sent)
        yield from (requests, duration, body)

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        yield from self._families()

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "http_requests", "Requests answered, by method, route and status.", labels=["method", "route", "status"]
            ),
            HistogramMetricFamily(
                "http_request_duration_seconds",
                "Time from the request's arrival to the last byte of its answer, by route.",
                labels=["route"],
            ),
            CounterMetricFamily(
                "http_response_body_bytes",
                "Response body bytes handed to the kernel (sendfile included), by route.",
                labels=["route"],
            ),
        )


class StateGauges(Collector):
    """One gauge family whose samples a coroutine reads (from the database) before each scrape.

    ``read`` answers ``(label values, value)`` rows. A read that fails or takes longer than
    STATE_TIMEOUT leaves the family out of that scrape rather than serving stale numbers.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Awaitable[Rows]]):
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self._read = read
        self._rows: list[tuple[Sequence[str], float]] | None = None

    async def refresh(self) -> None:
        try:
            self._rows = list(await asyncio.wait_for(self._read(), STATE_TIMEOUT))
        except Exception as exc:  # a scrape still answers the request metrics
            self._rows = None
            log.warning("metrics: cannot read %s: %s", self.name, exc or type(exc).__name__)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._rows is None:
            return
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self._rows:
            family.add_metric(list(labels), value)
        yield family


class HttpMetrics:
    """A service's metrics: the request metrics, plus what the service adds (``counters`` of its
    own, ``add_state`` for gauges read at scrape time).

    ``on_request`` hooks see every finished request with its status (the edge's denials).
    ``metrics_middleware`` counts requests; a service with a pipeline of its own (the edge's)
    calls ``count`` itself.
    """

    def __init__(self, *, public: bool = True) -> None:
        self.public = public
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics()
        self.registry.register(self.requests)
        self.on_request: list[Callable[[web.Request, web.StreamResponse | None, int], None]] = []
        self.states: list[StateGauges] = []
        self.own_counters: list[Counters] = []
        # what holds counts not yet added (the edge's finished requests, edge/finished.py): settled
        # before the counts are read
        self.sources: list[Callable[[], None]] = []
        # where one of several worker processes answers for the node (repository/http/metrics_shared.py)
        self.shared: SharedCounts | None = None
        # each route's label, found once: routes are fixed once the app runs
        self._labels: dict[web.AbstractRoute, str] = {}

    def count(
        self, request: web.Request, response: web.StreamResponse | None, status: int, seconds: float, sent: int
    ) -> None:
        """One finished request: its route's counts, then the service's ``on_request`` hooks."""
        method = request.method
        if method not in METHODS:
            method = "other"
        route = request.match_info.route
        label = self._labels.get(route)
        if label is None:
            label = route_label(request)
            if route.resource is not None:  # the router's own 404 and 405 routes are new for each request
                self._labels[route] = label
        self.requests.observe(method, label, status, seconds, sent)
        for hook in self.on_request:
            hook(request, response, status)

    def counters(self, name: str, documentation: str, labels: Sequence[str]) -> Counters:
        counters = Counters(name, documentation, labels)
        self.registry.register(counters)
        self.own_counters.append(counters)
        return counters

    def add_state(
        self, name: str, documentation: str, labels: Sequence[str], read: Callable[[], Awaitable[Rows]]
    ) -> None:
        state = StateGauges(name, documentation, labels, read)
        self.registry.register(state)
        self.states.append(state)

    def settle(self) -> None:
        """Add the counts still held elsewhere (``sources``): before they are read."""
        for settle in self.sources:
            settle()

    async def exposition(self) -> bytes:
        """The text format, with every state gauge read afresh; the node's sums where it has workers."""
        self.settle()
        await asyncio.gather(*(s.refresh() for s in self.states))
        registry = self.registry if self.shared is None else await self.shared.registry()
        return generate_latest(registry)


class SharedCounts(Protocol):
    async def registry(self) -> CollectorRegistry:
        """Every worker's counts summed, with the state gauges as they were just read."""


metrics_key = web.AppKey("metrics", HttpMetrics)


def setup_metrics(app: web.Application, settings: ServiceSettings) -> HttpMetrics:
    """The app's metrics; the service adds its own counters and state gauges to what this answers."""
    metrics = app[metrics_key] = HttpMetrics(public=settings.metrics_public)
    return metrics


def route_label(request: web.Request) -> str:
    """The matched route's name (its canonical path if it has none); ``unmatched`` for none."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:  # the router's own 404 and 405
        return UNMATCHED
    return route.name or resource.canonical


class _BodyBytes:
    """The response writer's ``on_body_write`` hook."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, sent: int, *_: object) -> None:
        self.sent += sent


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives the request its id (``request_ids``), then counts it once it is answered, to its last byte.

    Outermost in the pipeline: one layer does both, as aiohttp's chain costs per layer.
    The response is sent here (``prepare`` and ``write_eof``, which aiohttp would do after the
    middlewares) so the duration and the bytes cover the body too; where a step inside sent it
    already, both calls do nothing.
    """
    token = begin_request(request)
    metrics = request.app[metrics_key]
    started = time.perf_counter()
    counted = request.writer.on_body_write = _BodyBytes()
    response: web.StreamResponse | None = None
    status = CLIENT_CLOSED
    try:
        response = await handler(request)
        status = response.status
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; aiohttp's own finish of the response sees the same and stays quiet
        return response
    except web.HTTPException as exc:  # redirects, which aiohttp sends as they are
        response, status = exc, exc.status
        raise
    finally:
        metrics.count(request, response, status, time.perf_counter() - started, counted.sent)
        current_request_id.reset(token)


async def scrape(request: web.Request) -> web.Response:
    """``GET /metrics``: open to anyone with ``metrics_public`` (the default), else admins only."""
    metrics = request.app[metrics_key]
    if not metrics.public:
        require_role(request, Role.admin)
    body = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
