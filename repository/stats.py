"""Download statistics of a file, as Artifactory's ``?stats`` answers them.

A node that keeps them (an edge, from its audit trail) offers a ``StatsSource``;
elsewhere every file answers zero downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DownloadStats:
    count: int = 0
    last_downloaded: int = 0  # epoch ms; 0: never
    last_downloaded_by: str = ""


class StatsSource(Protocol):
    async def download_stats(self, repo: str, path: str) -> DownloadStats:
        """The statistics of one file; zeros when it was never downloaded."""
