"""Console pages of distributions: the rule picker with its dry run, a distribution's page with live
progress per edge (server-sent events), abort and undistribute, through ``distribution.orders`` and
the job runner exactly as the REST handlers call them.

The events come from the service's own job records, read by the server every half second and
sent only when they changed: any replica on the database can serve a page of any distribution,
and the page never polls.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response
from multidict import MultiDictProxy

from distribution import orders
from distribution.api import READERS, _name_version
from distribution.jobs import COMPLETED, FAILED, Distribution
from distribution.keys import runner_key
from distribution.progress import Rates, human_bytes
from distribution.rules import Rule, parse_rules
from distribution.runner import JobRunner
from repository.console.auth import posted, see_other, signed_in
from repository.console.pages import console_page, render
from repository.errors import NotFound
from repository.http.auth import require_role
from repository.tokens import Role

from .bundle_views import bundle_url

EVENT_INTERVAL = 0.5
# a page's stream ends after this long (the browser reconnects by itself), so none lingers forever
STREAM_SECONDS = 600


def _runner(request: web.Request) -> JobRunner:
    return request.app[runner_key]


def _rules(form: MultiDictProxy[str]) -> tuple[Rule, ...]:
    """The picker's one rule (site, city, comma-separated countries; empty means any), parsed by the
    API's own rule parser."""
    countries = [c.strip() for c in form.get("countries", "").split(",") if c.strip()] or ["*"]
    rule = {
        "site_name": form.get("site", "").strip() or "*",
        "city_name": form.get("city", "").strip() or "*",
        "country_codes": countries,
    }
    return parse_rules([rule])


def site_rows(distribution: Distribution, rates: Rates | None = None) -> list[dict[str, Any]]:
    """One row per edge as the page and its events show it."""
    rows = []
    for site in distribution.as_json()["sites"]:
        rate = rates.rate(site) if rates and site["status"] not in (COMPLETED, FAILED) else None
        rows.append(
            {
                "edge": site["target_artifactory"]["name"],
                "state": site["status"],
                "files": f"{site['distributed_files']}/{site['total_files']}",
                "bytes": f"{human_bytes(site['distributed_bytes'])}/{human_bytes(site['total_bytes'])}",
                "rate": f"{human_bytes(rate)}/s" if rate is not None else "",
                "error": site["general_error"],
            }
        )
    return rows


async def _distribution(request: web.Request) -> Distribution:
    name, version = _name_version(request)
    raw = request.match_info["id"]
    found = await _runner(request).jobs.get(name, version, int(raw)) if raw.isdigit() and len(raw) < 19 else None
    if found is None:
        raise NotFound(f"No distribution {raw} of {name}/{version}")
    return found


@console_page
async def distribute(request: web.Request) -> web.StreamResponse:
    """``action=dry_run`` lists the edges the rule reaches and queues nothing; ``action=distribute`` queues."""
    form = await posted(request)
    require_role(request, Role.admin)
    name, version = _name_version(request)
    order = orders.Order(_rules(form), dry_run=form.get("action") == "dry_run")
    dist_id, edges = await orders.distribute(_runner(request), name, version, order)
    if dist_id is None:
        context = {"name": name, "version": version, "edges": edges, "form": form, "url": bundle_url(name, version)}
        return render(request, "dry_run.html", context)
    return see_other(f"{bundle_url(name, version)}/distributions/{dist_id}")


@console_page
async def undistribute(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, Role.admin)
    name, version = _name_version(request)
    order = orders.Order(_rules(form), dry_run=False, on_success="keep")
    dist_id, _ = await orders.undistribute(_runner(request), name, version, order)
    return see_other(f"{bundle_url(name, version)}/distributions/{dist_id}")


@console_page
async def abort(request: web.Request) -> web.StreamResponse:
    await posted(request)
    require_role(request, Role.admin)
    name, version = _name_version(request)
    runner = _runner(request)
    await runner.bundles.get(name, version)
    await runner.abort(name, version)
    back = request.query.get("back", "")
    return see_other(back if back.startswith(bundle_url(name, version) + "/") else bundle_url(name, version))


@console_page
async def distribution_page(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, *READERS)
    found = await _distribution(request)
    url = bundle_url(found.name, found.version)
    context = {"d": found, "rows": site_rows(found), "url": url, "here": f"{url}/distributions/{found.id}"}
    return render(request, "distribution.html", context)


async def distribution_events(request: web.Request) -> web.StreamResponse:
    """``progress`` events with the rows of every edge whenever they change; the last one when the
    distribution ends (Completed or Failed), then the stream closes."""
    await signed_in(request)
    require_role(request, *READERS)
    found = await _distribution(request)
    runner, rates, last = _runner(request), Rates(), ""
    async with sse_response(request) as stream:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_SECONDS
        while stream.is_connected() and loop.time() < deadline:
            current = await runner.jobs.get(found.name, found.version, found.id)
            if current is None:
                break
            payload = json.dumps({"status": current.status, "sites": site_rows(current, rates)})
            if payload != last:
                await stream.send(payload, event="progress")
                last = payload
            if current.status in (COMPLETED, FAILED):
                break
            await asyncio.sleep(EVENT_INTERVAL)
    return stream
