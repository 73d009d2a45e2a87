"""Downloads of cached files, reported to the upstream in batches (``statistics.enabled``).

The upstream's download statistics (``?stats``) then count the downloads its remote
caches served, as Artifactory's smart remote does. Counts are kept in memory per
process and sent every ``remote_stats_interval`` seconds to the upstream's
``POST /artifactory/api/downloads/statistics``; a batch the upstream did not take is
kept for the next round, unless the upstream has no such endpoint (404/405: dropped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from repository.catalog import now_ms

from .config import RemoteConfig
from .errors import UpstreamFailed, UpstreamMissing
from .upstream import Upstream

log = logging.getLogger(__name__)

STATS_API = "api/downloads/statistics"
MAX_BATCH = 1000  # files one report names at most; the receiver refuses more


@dataclass
class _Count:
    config: RemoteConfig
    count: int
    last: int


class HitCounter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], _Count] = {}

    def add(self, config: RemoteConfig, path: str, count: int = 1, last: int | None = None) -> None:
        found = self._counts.get((config.key, path))
        when = last or now_ms()
        if found is None:
            self._counts[(config.key, path)] = _Count(config, count, when)
        else:
            found.count += count
            found.last = max(found.last, when)
            found.config = config

    async def report(self, upstream: Upstream) -> None:
        counts, self._counts = self._counts, {}
        by_repo: dict[str, list[tuple[str, _Count]]] = {}
        for (repo, path), c in counts.items():
            by_repo.setdefault(repo, []).append((path, c))
        for entries in by_repo.values():
            for start in range(0, len(entries), MAX_BATCH):
                batch = entries[start : start + MAX_BATCH]
                config = batch[0][1].config
                try:
                    await upstream.post_json(
                        config, STATS_API, {"downloads": [_entry(config, p, c, upstream.node_id) for p, c in batch]}
                    )
                except UpstreamMissing as exc:  # not an edge (a Distribution service keeps no statistics)
                    log.info("statistics of remote repo %s dropped: %s", config.key, exc)
                except UpstreamFailed as exc:
                    log.info("statistics of remote repo %s not reported, kept for later: %s", config.key, exc)
                    for path, c in batch:
                        self.add(c.config, path, c.count, c.last)


def _entry(config: RemoteConfig, path: str, c: _Count, node_id: str) -> dict[str, Any]:
    return {
        "repo": config.upstream_repo,
        "path": path,
        "count": c.count,
        "lastDownloaded": c.last,
        "lastDownloadedBy": node_id,
    }
