"""``distribution webhook ...`` as a release manager types it, against a real service process and
a real receiver: subscribe with a secret from a file, see the delivery log, redeliver, switch off
and on, remove; bad input is one clear error line and stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

from devstack.services import SOURCE_REPO, DistributionProcess
from tests.distribution_process import distribution_server_fixture  # noqa: F401  (fixture 'distribution_server')
from tests.test_distribution_cli import Cli, curl
from tests.webhook_receiver import WebhookReceiver

SECRET = "cli-secret-0123456789"


def test_a_webhook_is_managed_from_the_command_line(distribution_server: DistributionProcess, tmp_path: Path) -> None:
    cli = Cli(distribution_server.url, distribution_server.admin_token)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    with WebhookReceiver(tmp_path / "receiver", SECRET) as receiver:
        added = cli.json("webhook", "add", receiver.url, "--event", "bundle.deleted", "--secret-file", str(secret_file))
        assert (added["secret"], added["secret_generated"], added["events"]) == (SECRET, False, ["bundle.deleted"])
        sub_id = str(added["id"])
        assert cli.ok("webhook", "list").split()[:3] == [sub_id, receiver.url, "bundle.deleted"]
        assert "secret" not in json.dumps(cli.json("webhook", "list"))
        curl("-X", "PUT", "-H", f"Authorization: Bearer {cli.token}", "--data-binary", "v1",
             f"{cli.url}/artifactory/{SOURCE_REPO}/app/1.0.0/app.txt")  # fmt: skip
        cli.ok("bundle", "create", "app", "1.0.0", "--pattern", f"{SOURCE_REPO}/app/1.0.0/*")
        cli.ok("bundle", "delete", "app", "1.0.0")
        receiver.wait_for(lambda got: len(got) == 1)
        log = cli.ok("webhook", "deliveries", sub_id).split()
        assert log[2:7] == ["bundle.deleted", "delivered", "attempts", "1", "last"]
        cli.ok("webhook", "redeliver", log[0])
        got = receiver.wait_for(lambda got: len(got) == 2)
        assert [(r.type, r.problem, r.answered) for r in got] == [("bundle.deleted", "", 200)] * 2
        assert got[0].headers["X-Webhook-Id"] == got[1].headers["X-Webhook-Id"]
        generated = cli.json("webhook", "add", "http://hooks.example/x", "--event", "*")
        assert generated["secret_generated"] and len(generated["secret"]) >= 32
        assert cli.ok("webhook", "remove", str(generated["id"])) == ""
        assert [s["id"] for s in cli.json("webhook", "list")] == [added["id"]]
        assert cli.json("webhook", "disable", sub_id)["enabled"] is False
        assert cli.json("webhook", "enable", sub_id)["enabled"] is True
    assert "Unknown event 'bundle.exploded'" in cli.fails(
        "webhook", "add", "http://hooks.example/", "--event", "bundle.exploded"
    )
    assert "points back at this service" in cli.fails("webhook", "add", distribution_server.url + "/x", "--event", "*")
    assert "http or https" in cli.fails("webhook", "add", "ftp://hooks.example/", "--event", "*")
    assert cli.refuses("webhook", "remove", "0")
    assert "No webhook subscription 99" in cli.fails("webhook", "remove", "99")
    assert [s["id"] for s in cli.json("webhook", "list")] == [added["id"]]
