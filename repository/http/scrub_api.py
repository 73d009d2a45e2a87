"""The scrub of a service (repository/scrub.py): its wiring, metrics, and ``/artifactory/api/scrub``.

- ``GET /artifactory/api/scrub`` (admin): the settings, the pass under way, the last pass, and
  every quarantined blob with the paths that name it.
- ``POST /artifactory/api/scrub`` (admin): start a pass now, at the configured rate (202); 409
  while another process of the node runs one.

Metrics, ``<prefix>`` being the service's (``edge``, ``distribution``): ``<prefix>_scrub_blobs_total``
and ``<prefix>_scrub_bytes_total`` (read back by this process), ``<prefix>_scrub_passes_total``,
``<prefix>_scrub_quarantined_total{reason}`` (``mismatch``: bytes moved aside, ``missing``: the
store had lost them; found by the scrub or by a download) and the gauge
``<prefix>_quarantined_blobs`` (out of service now, read from the database).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from repository.db import Database
from repository.http import keys
from repository.leases import Leases
from repository.quarantine import QuarantinedBlob
from repository.scrub import Scrubber, ScrubCounts
from repository.scrub_store import BlobSource, ScrubStore
from repository.settings import ServiceSettings
from repository.tokens import Role
from wire.timestamps import iso

from .auth import require_role
from .metrics import Rows, metrics_key
from .responses import json_response
from .setup import database

scrubber_key = web.AppKey("scrubber", Scrubber)


def setup_scrub(
    app: web.Application, settings: ServiceSettings, prefix: str, source: Callable[[Database], BlobSource]
) -> None:
    """The scrubber of a service whose blobs to check ``source`` names; background passes when
    ``scrub.enabled``; its metrics under ``prefix``. After ``setup_artifact_core``."""
    metrics = app[metrics_key]
    blobs = metrics.counters(f"{prefix}_scrub_blobs", "Blobs read back and hashed by the scrub.", [])
    read = metrics.counters(f"{prefix}_scrub_bytes", "Bytes read back and hashed by the scrub.", [])
    passes = metrics.counters(f"{prefix}_scrub_passes", "Scrub passes completed by this process.", [])
    found = metrics.counters(
        f"{prefix}_scrub_quarantined", "Blobs taken out of service: bytes that do not match, or lost.", ["reason"]
    )
    for family in (blobs, read, passes):
        family.declare(())
    for reason in ("mismatch", "missing"):
        found.declare((reason,))
    counts = ScrubCounts(checked=[lambda n: blobs.inc(()), lambda n: read.inc((), n)], passes=[lambda: passes.inc(())])

    def count_quarantined(blob: QuarantinedBlob, _paths: list[tuple[str, str]]) -> None:
        found.inc(("mismatch" if blob.location else "missing",))

    async def quarantined() -> Rows:
        return [((), float(await app[keys.artifacts].quarantined.count()))]

    waiting = "Blobs out of service now, waiting for their bytes."
    metrics.add_state(f"{prefix}_quarantined_blobs", waiting, [], quarantined)

    async def scrub_ctx(app: web.Application) -> AsyncIterator[None]:
        artifacts = app[keys.artifacts]
        artifacts.on_quarantine.append(count_quarantined)
        db = app[database]
        scrubber = Scrubber(artifacts, ScrubStore(db), Leases(db), source(db), settings.scrub, counts)
        app[scrubber_key] = scrubber
        task = asyncio.create_task(scrubber.run_forever(), name="scrub") if settings.scrub.enabled else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await scrubber.close()

    app.cleanup_ctx.append(scrub_ctx)


async def _status(scrubber: Scrubber) -> dict[str, Any]:
    progress = await scrubber.progress()
    quarantine = scrubber.artifacts.quarantined
    listed = []
    for blob in await quarantine.blobs():
        paths = await quarantine.paths(blob.sha256)
        listed.append(blob.as_json() | {"found": iso(blob.found), "paths": [f"{r}/{p}" for r, p in paths]})
    under_way = None
    if progress.started is not None:
        under_way = {
            "started": iso(progress.started),
            "cursor": progress.cursor,
            "blobs": progress.blobs,
            "bytes": progress.bytes,
            "quarantined": progress.quarantined,
        }
    last = None
    if progress.last_finished is not None:
        last = {
            "started": iso(progress.last_started or progress.last_finished),
            "finished": iso(progress.last_finished),
            "blobs": progress.last_blobs,
            "bytes": progress.last_bytes,
            "quarantined": progress.last_quarantined,
        }
    settings = scrubber.settings
    return {
        "enabled": settings.enabled,
        "rate": settings.rate,
        "interval": settings.interval,
        "running": scrubber.running,
        "pass": under_way,
        "last_pass": last,
        "quarantined": listed,
    }


async def scrub_status(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return json_response(await _status(request.app[scrubber_key]))


async def scrub_start(request: web.Request) -> web.Response:
    """A pass now (202); the one under way in this process is answered as it is."""
    require_role(request, Role.admin)
    scrubber = request.app[scrubber_key]
    await scrubber.ask()
    return json_response(await _status(scrubber), status=202)
