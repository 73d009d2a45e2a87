"""What a user asks of the Distribution service: distribute a bundle, remove it from edges, trust its key.

Each function validates the request, decides which edges it targets and records the
jobs; the runner does the work in the background.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from repository.errors import BadRequest, Conflict
from transfer.client import EdgeCallError, EdgeClient

from .edges import Edge
from .jobs import DISTRIBUTE
from .relays import with_parents
from .rules import Rule, parse_rules, select_edges
from .runner import JobRunner
from .signing import Signer

DISTRIBUTE_FIELDS = {"dry_run", "distribution_rules", "auto_create_missing_repositories"}
DELETE_FIELDS = {"dry_run", "distribution_rules", "on_success"}
REPAIR_FIELDS = {"dry_run"}
ON_SUCCESS = ("keep", "delete")


@dataclass(frozen=True)
class Order:
    rules: tuple[Rule, ...]
    dry_run: bool
    on_success: str = "keep"


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be true or false")
    return value


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; expected {', '.join(sorted(allowed))}")


def parse_distribute(body: dict[str, Any]) -> Order:
    _check_fields(body, DISTRIBUTE_FIELDS)
    # edges create repositories on first use, so auto-creation is always on; asking for it off is refused
    if not _flag(body, "auto_create_missing_repositories", True):
        raise BadRequest("'auto_create_missing_repositories' false is not supported: edges create repos on first use")
    return Order(parse_rules(body.get("distribution_rules")), _flag(body, "dry_run", False))


def parse_repair(body: dict[str, Any]) -> bool:
    """A repair's only field: ``dry_run``."""
    _check_fields(body, REPAIR_FIELDS)
    return _flag(body, "dry_run", False)


def parse_delete(body: dict[str, Any]) -> Order:
    _check_fields(body, DELETE_FIELDS)
    on_success = body.get("on_success", "keep")
    if on_success not in ON_SUCCESS:
        raise BadRequest("'on_success' must be 'keep' or 'delete'")
    return Order(parse_rules(body.get("distribution_rules")), _flag(body, "dry_run", False), on_success)


async def distribute(runner: JobRunner, name: str, version: str, order: Order) -> tuple[int | None, list[Edge]]:
    """Queue one job per matching edge for a signed bundle; a dry run answers the edges and stores nothing."""
    bundle = await runner.bundles.get(name, version)
    if bundle.state != "SIGNED":
        raise Conflict(f"Release bundle {name}/{version} is not signed; sign it before distributing it")
    registered = await runner.edges.list()
    # a child's parent relays to it, so it is a target too, and keeps the bundle (docs/tiers.md)
    edges = with_parents(select_edges(order.rules, registered), registered)
    if order.dry_run:
        return None, edges
    totals = (bundle.artifacts_count, bundle.artifacts_size)
    dist_id, _ = await runner.jobs.create(DISTRIBUTE, name, version, order.rules, edges, totals)
    runner.wake()
    return dist_id, edges


async def repair(runner: JobRunner, name: str, version: str, dry_run: bool) -> tuple[int | None, list[Edge]]:
    """Distribute a bundle version again to the registered edges that hold it (their last completed
    job of it put it there): each is sent only the blobs its store lacks, those a scrub
    quarantined included, and checked again. A dry run answers the edges and stores nothing."""
    bundle = await runner.bundles.get(name, version)
    if bundle.state != "SIGNED":
        raise Conflict(f"Release bundle {name}/{version} is not signed, so no edge holds it")
    holders = set(await runner.jobs.holders(name, version))
    edges = [e for e in await runner.edges.list() if (e.name, e.service_id) in holders]
    if not edges:
        raise Conflict(f"No registered edge holds {name}/{version}: distribute it first")
    if dry_run:
        return None, edges
    totals = (bundle.artifacts_count, bundle.artifacts_size)
    dist_id, _ = await runner.jobs.create(DISTRIBUTE, name, version, (), edges, totals)
    runner.wake()
    return dist_id, edges


async def undistribute(runner: JobRunner, name: str, version: str, order: Order) -> tuple[int | None, list[Edge]]:
    """Queue the removal of a bundle version from the matching edges; each job counts its files."""
    bundle = await runner.bundles.get(name, version)
    edges = select_edges(order.rules, await runner.edges.list())
    if order.dry_run:
        return None, edges
    totals = (bundle.artifacts_count, bundle.artifacts_size)
    dist_id, _ = await runner.jobs.create_delete(name, version, order.rules, edges, order.on_success, totals)
    runner.wake()
    return dist_id, edges


def key_alias(fingerprint: str) -> str:
    return f"distribution-{fingerprint[:16].lower()}"


# A pull-mode edge is never called, so no key is pushed to it.
PULL_EDGE_TRUST = "a pull-mode edge is never called: trust the key there with `edge keys trust`"


async def propagate_keys(runner: JobRunner, signer: Signer) -> dict[str, Any]:
    """Push every public signing key to every registered edge's trusted keys (the circle of trust)."""
    edges = await runner.edges.list()
    if not edges:
        raise Conflict("No edges are registered: add one with POST /distribution/api/v1/edges first")
    return await push_keys(runner, signer, edges)


async def push_keys(runner: JobRunner, signer: Signer, edges: list[Edge], alias: str | None = None) -> dict[str, Any]:
    """Push the public key ``alias`` (None: every signing key) to ``edges``, all at once:
    ``{"status": "SUCCESS"|"PARTIAL_SUCCESS"|"FAILURE", "details": [{"name","key_alias","status"}]}``,
    a failed detail with the edge's ``message``. No edges: SUCCESS with no details.

    Edges change their trusted keys only for an admin token: an edge registered with a
    distributor token refuses (403), so a distributor cannot widen the circle of trust.
    """
    keys = [k for k in await asyncio.to_thread(signer.keys) if alias is None or k.alias == alias]
    public = [(key_alias(k.fingerprint), await asyncio.to_thread(signer.export_public, k.alias)) for k in keys]
    timeout = runner.settings.edge_read_timeout
    results = await asyncio.gather(
        *(_trust(edge, EdgeClient(runner.session, edge, read_timeout=timeout), public) for edge in edges)
    )
    details = [d for per_edge in results for d in per_edge]
    ok = sum(d["status"] == "SUCCESS" for d in details)
    status = "SUCCESS" if ok == len(details) else "FAILURE" if ok == 0 else "PARTIAL_SUCCESS"
    return {"status": status, "details": details}


async def _trust(edge: Edge, client: EdgeClient, public: list[tuple[str, str]]) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    for alias, armored in public:
        detail: dict[str, Any] = {"name": edge.name, "key_alias": alias, "status": "SUCCESS"}
        if edge.pulls:
            details.append(detail | {"status": "FAILURE", "message": PULL_EDGE_TRUST})
            continue
        try:
            await client.trust_key(alias, armored)
        except EdgeCallError as exc:
            message = exc.message
            if exc.status in (401, 403):
                message += "; trusting a key needs the edge registered with an admin token, not a distributor's"
            detail |= {"status": "FAILURE", "message": message}
        details.append(detail)
    return details
