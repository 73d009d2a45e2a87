"""An edge that answers a removal step with something other than the protocol fails the undistribute
job by name, quoting it, instead of keeping it In progress forever (wire/protocol.py ``parse_removal``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import admin
from tests.fault_servers import ThreadedServer
from tests.test_distribution_jobs import EVERYWHERE, FILES, V1, finished, register, signed_bundle, wait_for
from tests.test_distribution_jobs import dist as dist  # noqa: F401  (the fixture)
from wire.protocol import BUNDLES


def removal_answering(status: int, body: str) -> web.Application:
    """An edge whose every bundle DELETE answers ``status`` with ``body``, listing no bundle."""

    async def delete(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    async def bundles(request: web.Request) -> web.Response:
        return web.json_response([])

    app = web.Application()
    app.router.add_delete(BUNDLES + "/{name}/{version}", delete)
    app.router.add_get(BUNDLES, bundles)
    return app


STUCK = json.dumps({"status": "in_progress", "removed": 1, "total": 3})


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (STUCK, "removed nothing (1 of 3 files, as before)"),
        ("<html>busy</html>", "not JSON"),
        (json.dumps({"status": "done", "removed": 3, "total": 3}), "answered 202 with a removal in progress"),
        (json.dumps({"status": "in_progress", "removed": 4, "total": 3}), "fewer files removed than its total"),
        (json.dumps({"status": "in_progress", "removed": "1", "total": 3}), "answered 202"),
    ],
)
async def test_an_edge_answering_a_removal_step_outside_the_protocol_fails_the_job_by_name(
    dist: Any, body: str, said: str
) -> None:
    edge = ThreadedServer(lambda: removal_answering(202, body)).start()
    try:
        await register(dist, name="odd-1", url=edge.url)
        await signed_bundle(dist, "1.0", FILES)
        resp = await dist.post(f"{V1}/distribution/app/1.0/delete", json={"distribution_rules": EVERYWHERE},
                               headers=admin())  # fmt: skip
        assert resp.status == 202, await resp.text()
        done = await wait_for(dist, "1.0", int((await resp.json())["id"]), finished)
    finally:
        edge.stop()
    (site,) = done["sites"]
    assert done["status"] == "Failed" and site["status"] == "Failed", done
    assert "odd-1" in site["general_error"] and said in site["general_error"], site["general_error"]
