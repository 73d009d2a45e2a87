"""Requests answered, summed up in batches: each one's audit record and its counts.

Once the edge's pipeline (edge/pipeline.py) has sent a response, what is left is bookkeeping:
the request's audit record (``record_request``) and its counts (``HttpMetrics.count``). Done
between two requests, that bookkeeping ran with its code and data out of the CPU's caches and
cost a 4 KiB download some 3.5 µs more than the same work done for many requests in one run. So
the pipeline only queues what it finished (``add``), and the queue is summed up
``FINISHED_DELAY`` seconds after its first entry, or at once when it holds ``FINISHED_MAX``.

Whatever reads the sums settles the queue first: the audit trail before each write
(``AuditTrail.sources``) and the metrics before each scrape or snapshot (``HttpMetrics.sources``),
so no record reaches the database and no count reaches a scrape later than before. A record
keeps the time its request finished. A queued request holds on to its request and response
objects: at most ``FINISHED_MAX`` of them, for at most ``FINISHED_DELAY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from repository.catalog import now_ms
from repository.http.metrics import HttpMetrics

from .access.audit import AuditTrail
from .access.audit_step import UNRECORDED_ROUTES, record_request
from .access.context import AccessContext

log = logging.getLogger(__name__)

FINISHED_DELAY = 0.05
FINISHED_MAX = 256

# request, its access context, response (None when none was made), status, seconds taken, whether
# it was cut off, and when it finished (epoch ms)
_Entry = tuple[web.Request, AccessContext, web.StreamResponse | None, int, float, bool, int]


class Finished:
    """The queue of one app's finished requests, settled into its audit trail and its metrics."""

    def __init__(self, trail: AuditTrail, metrics: HttpMetrics) -> None:
        self._trail, self._metrics = trail, metrics
        self._entries: list[_Entry] = []
        self._due: asyncio.TimerHandle | None = None
        trail.sources.append(self.settle)
        metrics.sources.append(self.settle)

    def add(
        self,
        request: web.Request,
        ctx: AccessContext,
        response: web.StreamResponse | None,
        status: int,
        seconds: float,
        aborted: bool,
    ) -> None:
        """A request whose response has ended (complete or cut off after ``seconds``)."""
        entries = self._entries
        entries.append((request, ctx, response, status, seconds, aborted, now_ms()))
        if len(entries) == 1:
            self._due = asyncio.get_running_loop().call_later(FINISHED_DELAY, self.settle)
        elif len(entries) >= FINISHED_MAX:
            self.settle()

    @property
    def queued(self) -> int:
        return len(self._entries)

    def settle(self) -> None:
        """Record and count every queued request, in the order they finished."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        entries, self._entries = self._entries, []
        trail, count = self._trail, self._metrics.count
        audits = trail.enabled
        for request, ctx, response, status, seconds, aborted, finished in entries:
            try:
                count(request, response, status, seconds, ctx.bytes_sent)
                if audits and request.match_info.route.name not in UNRECORDED_ROUTES:
                    record_request(trail, request, ctx, response, status, seconds, aborted=aborted, at=finished)
            except Exception:  # one request's bookkeeping failing never loses the others'
                log.exception("recording the finished request %s %s failed", request.method, request.path)


finished_key = web.AppKey("finished", Finished)
