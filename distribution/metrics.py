"""What the Distribution service adds to the request metrics: its jobs, and how far each edge is behind.

- ``distribution_jobs{state}``: jobs by JFrog state, read from the database at each scrape.
- ``distribution_sent_bytes_total{edge}``: blob bytes this process sent to each edge (a counter:
  it starts at 0 with the process, and bytes sent again after a dropped connection count again).
- ``distribution_edge_pending_jobs{edge}``: jobs queued or running for the edge.
- ``distribution_edge_lag_seconds{edge}``: how long the oldest distribution still unfinished on
  the edge has waited, from when it was asked for; 0 when the edge has nothing pending. An edge
  that is offline shows a lag that grows until it catches up.

Every registered edge has a pending and a lag sample (0 when it is up to date), and so does an
edge that has been removed while jobs of it were still running.
"""

from __future__ import annotations

from aiohttp import web

from repository.catalog import now_ms
from repository.http.metrics import HttpMetrics, Rows, setup_metrics
from repository.http.setup import database

from .edges import EdgeStore
from .jobs import JobStore
from .settings import DistributionSettings


class EdgeTraffic:
    """Blob bytes sent to each edge by this process; the job runner reports them as they go."""

    def __init__(self, metrics: HttpMetrics) -> None:
        self._sent = metrics.counters(
            "distribution_sent_bytes", "Blob bytes this process sent to each edge, resends included.", ["edge"]
        )

    def sent(self, edge: str, n: int) -> None:
        self._sent.inc((edge,), n)


edge_traffic_key = web.AppKey("edge_traffic", EdgeTraffic)


def setup_distribution_metrics(app: web.Application, settings: DistributionSettings) -> HttpMetrics:
    metrics = setup_metrics(app, settings)
    app[edge_traffic_key] = EdgeTraffic(metrics)

    async def jobs() -> Rows:
        counts = await JobStore(app[database]).count_by_state()
        return [((state,), float(n)) for state, n in counts.items()]

    async def per_edge() -> dict[str, tuple[int, float]]:
        """Edge -> (pending jobs, lag in seconds)."""
        registered = await EdgeStore(app[database]).list()
        pending = await JobStore(app[database]).pending_by_edge()
        now = now_ms()
        answer = {e.name: (0, 0.0) for e in registered}
        for edge, (count, oldest) in pending.items():
            answer[edge] = (count, max(0, now - oldest) / 1000)
        return answer

    async def pending_jobs() -> Rows:
        return [((edge,), float(count)) for edge, (count, _) in sorted((await per_edge()).items())]

    async def lag() -> Rows:
        return [((edge,), seconds) for edge, (_, seconds) in sorted((await per_edge()).items())]

    metrics.add_state("distribution_jobs", "Distribution jobs (one per bundle and edge), by state.", ["state"], jobs)
    metrics.add_state("distribution_edge_pending_jobs", "Jobs queued or running for each edge.", ["edge"], pending_jobs)
    metrics.add_state(
        "distribution_edge_lag_seconds",
        "Seconds the oldest distribution still unfinished on each edge has waited; 0 when none is.",
        ["edge"],
        lag,
    )
    return metrics
