"""Which cached files go when remote repos' caches hold more than the node allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedFile:
    repo: str
    path: str
    size: int
    last_used: int  # epoch ms


def over_limit(files: Sequence[CachedFile], max_bytes: int) -> list[CachedFile]:
    """The least recently used files to drop so that the rest hold at most ``max_bytes``.

    ``files`` come least recently used first; a cache at exactly its bound keeps everything.
    """
    total = sum(f.size for f in files)
    victims: list[CachedFile] = []
    for f in files:
        if total <= max_bytes:
            break
        victims.append(f)
        total -= f.size
    return victims
