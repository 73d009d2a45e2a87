"""The fleet's device side against a real ``distribution serve`` process: an operator's
``distribution fleet ...`` commands, and a device enrolling and checking in with plain HTTP
and the wire contract's bodies, as the node agent does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from devstack.services import DistributionProcess
from tests.distribution_process import distribution_server_fixture  # noqa: F401  (fixture 'distribution_server')
from tests.fleet_setup import heartbeat
from tests.test_distribution_cli import cli_for
from wire.fleet import CHECK_IN, ENROLL, CheckIn, Enrollment, EnrollRequest, device_headers


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_operator_enrolls_a_device_and_sees_it_in_the_fleet(distribution_server: DistributionProcess) -> None:
    cli = cli_for(distribution_server)
    created = cli.ok("fleet", "token", "create", "--group", "pos-emea", "--tag", "country=PT", "--expires", "24h")
    secret = created.splitlines()[0]
    assert secret.startswith("fet_") and "active" in created

    base = distribution_server.url
    status, body = post(base + ENROLL, EnrollRequest(secret, "till-0042", {"site": "lisbon"}, "1.0.0").to_json())
    assert status == 201, body
    enrollment = Enrollment.from_json(body)
    assert enrollment.group == "pos-emea" and enrollment.signing_keys
    status, body = post(
        base + CHECK_IN, heartbeat(cpu=12, apps={"till": "2.3.0"}).to_json(), device_headers(enrollment.credential)
    )
    assert status == 200, body
    assert CheckIn.from_json(body).poll_interval == 30

    table = cli.ok("fleet", "devices", "--group", "pos-emea").splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "GROUP", "APPS"]
    assert table[1].split()[:5] == ["till-0042", "online", "pos-emea", "till=2.3.0", "12%"]
    (device,) = cli.json("fleet", "devices", "--tag", "site=lisbon", "--online")
    assert device["tags"] == {"country": "PT", "site": "lisbon"} and device["apps"]["till"]["version"] == "2.3.0"
    assert cli.json("fleet", "devices", "--group", "kiosks") == []
    assert "1 devices" in cli.ok("fleet", "token", "list")
    assert "cpu 12%" in cli.ok("fleet", "device", "show", "till-0042")
    assert (
        cli.ok("fleet", "group", "set", "pos-emea", "--poll-interval", "120")
        == "pos-emea  1 devices  polling every 120 s\n"
    )
    status, body = post(base + CHECK_IN, heartbeat().to_json(), device_headers(enrollment.credential))
    assert (status, body["poll_interval"]) == (200, 120)

    cli.ok("fleet", "app", "create", "till", "--bundle", "till-app", "--install-dir", "/opt/till",
           "--restart", "systemctl restart till", "--health", "http://127.0.0.1:9000/health")  # fmt: skip
    assert cli.ok("fleet", "app", "list").startswith("till  bundle till-app  in /opt/till  keep 3")
    assert "409" in cli.fails("fleet", "app", "create", "till", "--bundle", "other", "--install-dir", "/opt/till")

    cli.ok("fleet", "device", "revoke", "till-0042")
    status, body = post(base + CHECK_IN, heartbeat().to_json(), device_headers(enrollment.credential))
    assert status == 401 and "revoked" in body["errors"][0]["message"]
    assert cli.ok("fleet", "devices", "--offline").splitlines()[1].split()[:2] == ["till-0042", "revoked"]


def test_fleet_commands_say_what_is_wrong(distribution_server: DistributionProcess) -> None:
    cli = cli_for(distribution_server)
    assert "expires_in" in cli.fails("fleet", "token", "create", "--group", "pos", "--expires", "soon")
    assert "404" in cli.fails("fleet", "device", "revoke", "nobody")
    assert cli.refuses("fleet", "device", "show", "../etc").startswith("Error: Invalid value for 'NAME'")
    status, body = post(distribution_server.url + ENROLL, EnrollRequest("fet_nothing", "till-1").to_json())
    assert (status, body["errors"][0]["message"]) == (401, "Unknown enrollment token")
