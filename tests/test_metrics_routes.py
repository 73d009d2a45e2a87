"""Route labels of the request metrics: found once per route, and nothing kept per request."""

from __future__ import annotations

from typing import Any

from repository.http.metrics import UNMATCHED, metrics_key
from tests.test_metrics import parse, requests_of


async def test_requests_no_route_matches_are_counted_as_unmatched_and_leave_no_state_behind(edge: Any) -> None:
    for i in range(40):
        assert (await edge.get(f"/nowhere/{i}")).status == 404
        assert (await edge.get("/artifactory/api/system/ping")).status == 200
    samples = parse(await (await edge.get("/metrics")).text())
    assert requests_of(samples, "GET", UNMATCHED, 404) == 40
    assert requests_of(samples, "GET", "ping", 200) == 40
    routes = {id(route) for route in edge.app.router.routes()}
    assert {id(route) for route in edge.app[metrics_key]._labels} <= routes  # the router's own 404s are not kept
