"""Downloading a bundle version's files from the nearest edge, with resume and failover.

The edges offered are measured (a ping, in parallel threads) and tried fastest first.
Each file goes to ``staging/<sha256>.part``, resumed with a Range request after a
dropped link, from the same edge or the next one (same sha256, same bytes), and is
renamed to ``staging/<sha256>`` only once its size and sha256 match the signed
manifest. A file whose bytes do not match is refused by name and fetched again from
another edge; a token the edge no longer accepts means: ask the control plane for
fresh sources.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from wire.fleet import EdgeOffer, Sources, download_url
from wire.manifest import ManifestArtifact

from .bandwidth import TokenBucket
from .http import Http, Refused, ServerUnavailable

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
PING = "/artifactory/api/system/ping"
MAX_SOURCE_REFRESHES = 3


class DownloadFailed(Exception):
    """No edge gave a file whole and correct; the message names the file and every edge's answer."""


class DiskFull(DownloadFailed):
    pass


class Canceled(Exception):
    """The operator canceled the action while it downloaded."""


class TokensExpired(Exception):
    pass


def measure(http: Http, edges: tuple[EdgeOffer, ...], timeout: float, workers: int) -> list[EdgeOffer]:
    """The edges fastest first, by the time each takes to answer a ping; silent ones last."""

    def ping(edge: EdgeOffer) -> float:
        start = time.monotonic()
        try:
            with http.open("GET", edge.url + PING, timeout=timeout) as resp:
                resp.read(64)
        except (ServerUnavailable, Refused) as exc:
            log.info("edge %s did not answer the probe: %s", edge.name, exc)
            return math.inf
        return time.monotonic() - start

    if len(edges) <= 1:
        return list(edges)
    with ThreadPoolExecutor(max_workers=min(workers, len(edges)), thread_name_prefix="probe") as pool:
        times = list(pool.map(ping, edges))
    ranked = sorted(zip(times, range(len(edges)), edges, strict=True))
    log.info("edges by speed: %s", ", ".join(f"{e.name} ({t * 1000:.0f} ms)" for t, _, e in ranked))
    return [e for _, _, e in ranked]


class Downloader:
    def __init__(
        self,
        http: Http,
        staging: Path,
        refresh: Callable[[], Sources],
        *,
        bucket: TokenBucket | None = None,
        canceled: Callable[[], bool] = lambda: False,
        on_refused: Callable[[str], None] = lambda message: None,
        probe_timeout: float = 5.0,
        probe_workers: int = 4,
        checkpoint: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.http = http
        self.staging = staging
        self._refresh = refresh
        self.bucket = bucket
        self.canceled = canceled
        self.on_refused = on_refused
        self.probe_timeout = probe_timeout
        self.probe_workers = probe_workers
        self.checkpoint = checkpoint  # the crash hook: "mid_download" once a chunk is on disk

    def staged(self, sha256: str) -> Path:
        return self.staging / sha256

    def fetch_all(self, sources: Sources, artifacts: tuple[ManifestArtifact, ...]) -> dict[str, Path]:
        """Every artifact staged and checked; answers target -> staged file."""
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        edges = measure(self.http, sources.edges, self.probe_timeout, self.probe_workers)
        refreshes = 0
        done: dict[str, Path] = {}
        for artifact in artifacts:
            while artifact.target not in done:
                tokens = {f.path: f.token for f in sources.files}
                if artifact.target not in tokens:
                    raise DownloadFailed(f"the control plane offers no source for {artifact.target}")
                try:
                    if sources.expires <= time.time() * 1000:
                        raise TokensExpired()
                    done[artifact.target] = self.fetch(artifact, edges, tokens[artifact.target])
                except TokensExpired:
                    refreshes += 1
                    if refreshes > MAX_SOURCE_REFRESHES:
                        raise DownloadFailed(f"{artifact.target}: the edges refuse every fresh token") from None
                    log.info("download tokens expired: asking the control plane for sources again")
                    sources = self._refresh()
                    edges = measure(self.http, sources.edges, self.probe_timeout, self.probe_workers)
        return done

    def fetch(self, artifact: ManifestArtifact, edges: list[EdgeOffer], token: str) -> Path:
        """One file, from the first edge that gives it whole and correct; resumes across edges."""
        final = self.staged(artifact.sha256)
        if final.is_file():
            return final
        if not edges:
            raise DownloadFailed(f"no edge offers {artifact.target}")
        part = final.with_name(final.name + ".part")
        answers: dict[str, str] = {}
        refused_token = 0
        tampered: set[str] = set()
        # who wrote the bytes in ``part``: a wrong file is blamed on an edge only when it alone sent it
        senders: set[str] = {"an earlier run"} if part.exists() else set()
        for attempt in range(2 * len(edges) + 1):
            edge = edges[attempt % len(edges)]
            if edge.name in tampered:
                continue
            if self.canceled():
                raise Canceled()
            had = part.stat().st_size if part.exists() else 0
            try:
                self._transfer(edge, artifact, token, part)
            except Refused as exc:
                answers[edge.name] = f"{exc.status} {exc.message}"
                refused_token += exc.status in (401, 403)
                if refused_token >= len(edges):
                    raise TokensExpired() from None
                continue
            except ServerUnavailable as exc:
                answers[edge.name] = str(exc)
                log.warning("download of %s from %s interrupted (%s); resuming", artifact.target, edge.name, exc)
                continue
            finally:
                if part.exists() and part.stat().st_size != had:
                    senders.add(edge.name)
            if _sha256_of(part) == artifact.sha256 and part.stat().st_size == artifact.size:
                os.replace(part, final)
                return final
            part.unlink()
            answers[edge.name] = "bytes do not match the signed manifest"
            self._refuse(artifact, senders, tampered)
            senders = set()
        said = "; ".join(f"{name}: {why}" for name, why in answers.items())
        raise DownloadFailed(f"{artifact.target} could not be downloaded from any edge ({said})")

    def _refuse(self, artifact: ManifestArtifact, senders: set[str], tampered: set[str]) -> None:
        """Report a file whose bytes are not the signed ones; an edge that alone sent it is not asked again."""
        if len(senders) == 1 and "an earlier run" not in senders:
            tampered |= senders
            source = f"edge {next(iter(senders))}"
        else:
            source = "edges " + ", ".join(sorted(senders))
        message = (
            f"refused {artifact.target} from {source}: its bytes do not match the signed manifest's sha256 "
            f"{artifact.sha256}; taking it again from another edge"
        )
        log.error(message)
        self.on_refused(message)

    def _transfer(self, edge: EdgeOffer, artifact: ManifestArtifact, token: str, part: Path) -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > artifact.size:
            part.unlink()
            have = 0
        if have == artifact.size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = download_url(edge.url, artifact.target, token)
        with self.http.open("GET", url, headers) as resp:
            if have and resp.status != 206:
                have = 0  # the edge sent the whole file: start over
            with _local(artifact.target), open(part, "r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                self._copy(edge, resp, out, artifact.size - have)

    def _copy(self, edge: EdgeOffer, resp: IO[bytes], out: IO[bytes], remaining: int) -> None:
        while remaining > 0:
            if self.canceled():
                raise Canceled()
            size = min(CHUNK, remaining, self.bucket.rate if self.bucket else CHUNK)
            if self.bucket:
                self.bucket.take(size)
            try:
                chunk = resp.read(size)
            except (OSError, http.client.HTTPException) as exc:
                raise ServerUnavailable(f"{edge.name}: the transfer broke off ({exc!r})") from None
            if not chunk:
                raise ServerUnavailable(f"{edge.name} closed the connection before the end of the file")
            out.write(chunk)
            remaining -= len(chunk)
            out.flush()
            if remaining:
                self.checkpoint("mid_download")
        os.fsync(out.fileno())


@contextmanager
def _local(target: str) -> Iterator[None]:
    """A full disk on the device is a failure of its own: no other edge can help."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"disk full while downloading {target}: {exc.strerror}") from None
        raise


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
