"""``distribution fleet deploy|status|deployments|pause|resume|cancel|rollback|url-key``
against the service over HTTP, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from click.testing import CliRunner, Result

from fleet.cli import fleet as fleet_cli
from tests.conftest import ADMIN_TOKEN
from tests.fleet_deploy import check_in, fleet_fixture, report, signed_release  # noqa: F401
from tests.fleet_rows import add_devices


async def run(client: Any, *args: str) -> Result:
    base = ["--url", str(client.make_url("")).rstrip("/"), "--token", ADMIN_TOKEN]
    command, rest = args[0], list(args[1:])
    command_args = [command, rest[0], *base, *rest[1:]] if command == "url-key" else [command, *base, *rest]
    return await asyncio.to_thread(CliRunner().invoke, fleet_cli, command_args)


async def test_deploy_watch_steer_and_list_from_the_cli(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 10)
    made = await run(
        fleet, "deploy", "till", "2.3.0", "--group", "pos", "--canary", "20%", "--halt-on-failures", "1",
        "--window", "22:00-04:00", "--timezone", "Europe/Lisbon", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    body = json.loads(made.output)
    assert [p["size"] for p in body["phases"]] == [2, 8]
    assert body["window"] == {"start": "22:00", "end": "04:00", "timezone": "Europe/Lisbon"}
    assert body["halt_on_failures"] == "1"
    (action,) = await check_in(fleet, "pos-00000")
    await report(fleet, "pos-00000", action.action_id, "failed", step="health_check", message="health: 503")
    shown = await run(fleet, "status", str(body["id"]))
    assert shown.exit_code == 0, shown.output
    assert "phase 1: 2 devices, started: 1 failed, 1 pending" in shown.output
    assert "pos-00000  phase 1  failed at health_check (health: 503)" in shown.output
    assert "phase 2: 8 devices, waiting: 8 pending" in shown.output
    paused = await run(fleet, "pause", str(body["id"]))
    assert "paused" in paused.output
    listed = await run(fleet, "deployments")
    assert f"deployment {body['id']}: till 2.3.0 to 10 devices, paused, phase 1\n" in listed.output
    back = await run(fleet, "rollback", str(body["id"]))
    assert "rolled_back" in back.output
    watched = await run(fleet, "status", str(body["id"]), "--watch", "--devices", "0")
    assert watched.exit_code == 0 and "rolled_back" in watched.output
    bad = await run(fleet, "resume", str(body["id"]))
    assert bad.exit_code != 0 and "409" in bad.output
    wrong = await run(fleet, "deploy", "till", "2.3.0", "--group", "pos", "--window", "late")
    assert wrong.exit_code != 0 and "HH:MM-HH:MM" in wrong.output


async def test_url_key_propagate_with_no_edges_says_so(fleet: Any) -> None:
    done = await run(fleet, "url-key", "propagate")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("SUCCESS: key fleet-")
