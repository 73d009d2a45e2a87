"""The console's fleet pages: devices with online state and versions, a deployment's phases, and
pause, resume and rollback through the same steering as the REST API."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN_TOKEN
from tests.console_client import form_post, log_in, reader_token
from tests.fleet_deploy import deploy, fleet_fixture, signed_release, status  # noqa: F401  (fixture)
from tests.fleet_rows import add_devices
from tests.runtime_plane import ROGUE, TILL, plane_fixture, rogue, send, till  # noqa: F401  (fixture)
from wire.runtime import RuntimeReport


async def test_the_fleet_page_lists_devices_and_deployments(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 3)
    dep = await deploy(fleet)
    await log_in(fleet, token=ADMIN_TOKEN)
    page = await (await fleet.get("/ui/fleet")).text()
    for n in range(3):
        assert f"<tr><td>pos-0000{n}</td><td>pos</td><td>online</td>" in page
    assert f'href="/ui/fleet/deployments/{dep["id"]}"' in page


async def test_a_deployment_is_paused_resumed_and_rolled_back_from_its_page(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 4)
    dep = await deploy(fleet, canary="25%")
    url = f"/ui/fleet/deployments/{dep['id']}"
    await log_in(fleet, token=ADMIN_TOKEN)
    page = await (await fleet.get(url)).text()
    assert 'id="phases"' in page and 'value="pause"' in page and 'value="resume"' not in page
    for operation, state in (("pause", "paused"), ("resume", "running"), ("rollback", "rolled_back")):
        resp = await form_post(fleet, url, url + "/operate", operation=operation)
        assert resp.status == 303
        assert (await status(fleet, dep["id"]))["state"] == state
    # a refused operation (a rolled-back deployment cannot resume) is a 409 page, nothing changed
    resp = await form_post(fleet, url, url + "/operate", operation="resume")
    assert resp.status == 409
    assert (await status(fleet, dep["id"]))["state"] == "rolled_back"


async def test_a_reader_sees_no_steering_buttons_and_cannot_steer(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 2)
    dep = await deploy(fleet)
    await log_in(fleet, token=await reader_token(fleet, ADMIN_TOKEN))
    url = f"/ui/fleet/deployments/{dep['id']}"
    assert 'value="pause"' not in await (await fleet.get(url)).text()
    assert (await form_post(fleet, url, url + "/operate", operation="pause")).status == 403
    assert (await status(fleet, dep["id"]))["state"] == "running"


async def test_the_runtime_page_shows_where_a_version_runs_and_what_no_bundle_ships(plane: Any) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(), rogue())))
    await log_in(plane, token=ADMIN_TOKEN)
    page = await (await plane.get("/ui/fleet/runtime", params={"bundle": "app", "version": "2.3.0"})).text()
    where = page.split('id="where"')[1].split("</table>")[0]
    assert "<td>till-1</td>" in where and "releases-local/app/2.3.0/till.bin" in where
    unknown = page.split('id="unknown"')[1].split("</table>")[0]
    assert ROGUE in unknown and "/tmp/sleep" in unknown and TILL not in unknown
    assert 'id="events"' in page and 'id="drift"' in page
