"""``GET /fleet/api/v1/device/actions/{action_id}/sources``: where a device downloads the
bundle version of one of its actions (``wire.fleet.Sources``).

The answer holds the manifest exactly as it was signed and its signature (the device checks
both, and every file against them, itself), the registered edges whose last distribution
of that version is ``Completed`` (nearest first for the device's ``site``, ``city`` and
``country`` tags: same site, same city, same country, then the rest, each by name), and
every file of the manifest with a signed-URL token that opens exactly that file, good
until ``expires``. No edge holds it yet: a 409 (the device asks again later).

The answer is streamed: the manifest a stored chunk at a time, the files a page of the
bundle at a time with their tokens minted per page, so memory stays flat for a bundle of
any size (a bundle of N files answers about N x 400 bytes of files and tokens).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import Sequence

from aiohttp import web

from distribution.bundle_store import BundleArtifact
from distribution.edges import Edge
from distribution.keys import bundles_key, runner_key, settings_key
from repository.errors import Conflict, NotFound
from repository.http.setup import database

from .devices import Device, require_device
from .keys import device_lookup_key
from .rollout_feedback import parse_action
from .rollout_keys import url_key_key
from .rollout_url_key import FleetUrlKey


def nearest_first(edges: Sequence[Edge], device: Device) -> list[Edge]:
    """Edges ordered for a device: same site, same city, same country, then the rest."""
    site, city, country = (None if p is None else p.casefold() for p in device.place)

    def rank(edge: Edge) -> tuple[int, str]:
        if site is not None and edge.site_name.casefold() == site:
            return 0, edge.name
        if city is not None and edge.city_name.casefold() == city:
            return 1, edge.name
        if country is not None and edge.country_code.casefold() == country:
            return 2, edge.name
        return 3, edge.name

    return sorted(edges, key=rank)


def _offer(edge: Edge) -> dict[str, str]:
    return {
        "name": edge.name,
        "url": edge.url,
        "site": edge.site_name,
        "city": edge.city_name,
        "country": edge.country_code,
    }


def _files(page: list[BundleArtifact], key: FleetUrlKey, issued: int, expires: int) -> bytes:
    return ", ".join(
        json.dumps({"path": a.target, "size": a.size, "sha256": a.sha256, "token": key.mint(a.target, issued, expires)})
        for a in page
    ).encode()


async def sources(request: web.Request) -> web.StreamResponse:
    app = request.app
    device = await require_device(request, app[device_lookup_key])
    action = request.match_info["action_id"]
    ref = parse_action(action)
    row = await app[database].read(
        lambda: (
            app[database]
            .db.execute(
                "SELECT t.device_id, t.rb_state, t.previous, d.bundle, d.version FROM fleet_targets t"
                " JOIN fleet_deployments d ON d.id = t.deployment_id WHERE t.deployment_id = :dep AND t.seq = :seq",
                {"dep": ref.deployment, "seq": ref.seq},
            )
            .fetchone()
        )
    )
    if row is None or row[0] != device.id or (ref.rollback and row[1] is None):
        raise NotFound(f"No action '{action}' for this device")
    _, _, previous, bundle, version = row
    if ref.rollback:
        if previous is None:
            raise Conflict("This rollback removes the app: it ran no version before, so there is nothing to download")
        version = previous
    service = app[bundles_key]
    signed = await service.signed_manifest(bundle, version)
    runner = app[runner_key]
    holders = set(await runner.jobs.holders(bundle, version))
    edges = [e for e in await runner.edges.list() if (e.name, e.service_id) in holders]
    if not edges:
        raise Conflict(f"No edge holds {bundle}/{version} Completed yet; ask again later")
    key = app[url_key_key]
    issued = int(time.time())
    expires = issued + app[settings_key].fleet_url_lifetime

    response = web.StreamResponse()
    response.content_type, response.charset = "application/json", "utf-8"
    await response.prepare(request)
    head = {
        "bundle": bundle,
        "version": version,
        "signature": signed.signature,
        "expires": expires * 1000,
        "edges": [_offer(e) for e in nearest_first(edges, device)],
    }
    await response.write(json.dumps(head)[:-1].encode() + b', "manifest": "')
    decoder = codecs.getincrementaldecoder("utf-8")()
    async for chunk in service.store.manifest_chunks(signed):
        await response.write(json.dumps(decoder.decode(chunk))[1:-1].encode())
    await response.write(json.dumps(decoder.decode(b"", final=True))[1:-1].encode() + b'", "files": [')
    separator = b""
    async for page in service.store.artifact_pages(bundle, version):
        await response.write(separator + await asyncio.to_thread(_files, page, key, issued, expires))
        separator = b", "
    await response.write(b"]}\n")
    await response.write_eof()
    return response
