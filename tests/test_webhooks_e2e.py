"""Webhooks end to end: a real ``distribution serve``, a real edge and a real receiver process
that checks every delivery's signature and timestamp the way the README tells receivers to.

What a subscriber relies on: every step of a release arrives in order and signed; a receiver
that fails at first gets the event later, the attempts counted in the delivery log; one that
was down while the service restarted gets it after the restart; one that hangs never holds up
a distribution; redelivery sends the same event again; bad subscriptions are refused whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from tests.edge_setup import distributor_token, trust
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, public_key, running_service
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + "s3cr3t-for-the-tests-only"
FAST_WEBHOOKS = FAST_RETRIES | {"DISTRIBUTION_WEBHOOK_RETRY_BASE": "0.2", "DISTRIBUTION_WEBHOOK_RETRY_MAX": "1"}
FILES = {"app.tar.gz": b"the app\n" * 1000, "NOTES.md": b"# notes\n"}
RELEASE_STEPS = [
    "bundle.created",
    "bundle.signed",
    "distribution.started",
    "distribution.edge.completed",
    "distribution.completed",
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_WEBHOOKS)


@pytest.fixture
def edge(tmp_path: Path, service: Service) -> Iterator[EdgeProcess]:
    started = EdgeProcess(tmp_path / "edge").start()
    try:
        trust(started, public_key(service))
        service.add_edge("edge-1", started.url, distributor_token(started))
        yield started
    finally:
        started.stop()


def subscribe(service: Service, url: str, events: list[str], secret: str = SECRET) -> int:
    status, body = service.call("POST", f"{V1}/webhooks", {"url": url, "events": events, "secret": secret})
    assert status == 201, body
    assert body["secret"] == secret and body["enabled"] is True
    return int(body["id"])


def deliveries(service: Service, sub_id: int) -> list[dict[str, Any]]:
    """The delivery log, oldest first."""
    status, body = service.call("GET", f"{V1}/webhooks/{sub_id}/deliveries")
    assert status == 200, body
    return list(reversed(body))


def wait_log(service: Service, sub_id: int, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 90
    while True:
        log = deliveries(service, sub_id)
        if done(log):
            return log
        if time.monotonic() > deadline:  # a hang guard, not a speed check
            pytest.fail(f"gave up waiting for the delivery log: {log}")
        time.sleep(0.1)


def released(service: Service, version: str = "1.0.0") -> int:
    """Make, sign and distribute a bundle version; answers the distribution's id once it completed."""
    service.signed_bundle(version, FILES)
    dist_id = service.distribute(version)
    assert service.wait(version, dist_id)["status"] == "Completed"
    return dist_id


def test_a_release_reaches_the_receiver_step_by_step_in_order_and_signed(
    service: Service, edge: EdgeProcess, tmp_path: Path
) -> None:
    with WebhookReceiver(tmp_path / "receiver", SECRET) as receiver:
        sub_id = subscribe(service, receiver.url, ["*"])
        dist_id = released(service)
        got = receiver.wait_for(lambda got: len(got) >= len(RELEASE_STEPS))
    assert [r.problem for r in got] == [""] * len(got)  # every signature and timestamp checked out
    assert [r.type for r in got] == RELEASE_STEPS
    for r in got:
        assert r.headers["X-Webhook-Id"] == r.payload["id"]
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["X-Webhook-Event"] == r.type
        assert r.payload["time"].endswith("Z")
    assert len({r.payload["id"] for r in got}) == len(got)
    by_type = {r.type: r.data for r in got}
    assert by_type["bundle.created"]["name"] == by_type["bundle.signed"]["name"] == "app"
    assert by_type["bundle.signed"]["version"] == "1.0.0" and len(by_type["bundle.signed"]["manifest_sha256"]) == 64
    assert by_type["distribution.started"] | {"edges": ["edge-1"]} == by_type["distribution.started"]
    assert by_type["distribution.edge.completed"]["edge"] == "edge-1"
    assert by_type["distribution.completed"]["distribution_id"] == dist_id
    assert by_type["distribution.completed"]["sites"] == [{"edge": "edge-1", "status": "Completed", "error": ""}]
    log = deliveries(service, sub_id)
    assert [(d["event_type"], d["status"], d["attempts"], d["last_status"]) for d in log] == [
        (step, "delivered", 1, 200) for step in RELEASE_STEPS
    ]


def test_a_receiver_that_fails_at_first_gets_the_event_later_and_a_redelivery_sends_it_again(
    service: Service, tmp_path: Path
) -> None:
    with WebhookReceiver(tmp_path / "receiver", SECRET, fail_first=2) as receiver:
        sub_id = subscribe(service, receiver.url, ["bundle.created"])
        service.signed_bundle("1.0.0", FILES)
        log = wait_log(service, sub_id, lambda log: bool(log) and log[0]["status"] == "delivered")
        assert (log[0]["attempts"], log[0]["last_status"], log[0]["last_error"]) == (3, 200, "")
        got = receiver.received()
        assert [r.answered for r in got] == [500, 500, 200]
        assert len({r.headers["X-Webhook-Id"] for r in got}) == 1 and len({r.body for r in got}) == 1
        status, again = service.call("POST", f"{V1}/webhooks/deliveries/{log[0]['id']}/redeliver")
        assert status == 202, again
        assert again["event_id"] == log[0]["event_id"] and again["status"] == "pending"
        got = receiver.wait_for(lambda got: len(got) == 4)
    assert got[3].answered == 200 and got[3].headers["X-Webhook-Id"] == got[0].headers["X-Webhook-Id"]
    log = wait_log(service, sub_id, lambda log: len(log) == 2 and log[1]["status"] == "delivered")
    assert [(d["event_id"], d["attempts"]) for d in log] == [(log[0]["event_id"], 3), (log[0]["event_id"], 1)]


def test_a_receiver_down_while_the_service_restarts_gets_the_event_after(service: Service, tmp_path: Path) -> None:
    receiver = WebhookReceiver(tmp_path / "receiver", SECRET)
    sub_id = subscribe(service, receiver.url, ["bundle.created", "bundle.signed"])
    service.signed_bundle("1.0.0", FILES)
    log = wait_log(service, sub_id, lambda log: len(log) == 2 and log[0]["attempts"] >= 1)
    assert log[0]["status"] == "pending" and "cannot reach" in log[0]["last_error"]
    assert log[1]["attempts"] == 0  # in order: the second waits for the first
    assert service.process.stop() == 0
    with receiver:
        service.process.start()
        got = receiver.wait_for(lambda got: len(got) == 2)
    assert [(r.type, r.problem, r.answered) for r in got] == [("bundle.created", "", 200), ("bundle.signed", "", 200)]
    assert [d["status"] for d in deliveries(service, sub_id)] == ["delivered", "delivered"]


def test_a_receiver_that_hangs_never_holds_up_a_distribution(
    service: Service, edge: EdgeProcess, tmp_path: Path
) -> None:
    with WebhookReceiver(tmp_path / "receiver", SECRET, hang=True) as receiver:
        sub_id = subscribe(service, receiver.url, ["*"])
        released(service)  # completed while the first delivery still waits for its answer
        log = deliveries(service, sub_id)
        got = receiver.received()
    assert [d["event_type"] for d in log] == RELEASE_STEPS
    assert [d["status"] for d in log] == ["pending"] * len(RELEASE_STEPS)
    assert all(r.type == "bundle.created" for r in got)  # nothing after it was sent: in order


def refused(service: Service, body: dict[str, Any]) -> str:
    status, answer = service.call("POST", f"{V1}/webhooks", body)
    assert status == 400, answer
    assert set(answer) >= {"status_code", "message"} and answer["status_code"] == 400
    return str(answer["message"])


def test_bad_subscriptions_are_refused_whole_and_nothing_is_stored(service: Service) -> None:
    own = service.process.url
    port = own.rsplit(":", 1)[1]
    for url, says in [
        ("ftp://example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@example.com/hook", "credentials"),
        (own + "/distribution/api/v1/webhooks", "points back at this service"),
        (f"http://localhost:{port}/x", "points back at this service"),
        (f"http://[::1]:{port}/x", "points back at this service"),
        (f"http://127.0.0.2:{port}/x", "points back at this service"),
        ("http://example.com/" + "a" * 2030, "at most 2048"),
    ]:
        assert says in refused(service, {"url": url, "events": ["*"]}), url
    assert "Unknown event" in refused(service, {"url": "http://example.com/h", "events": ["bundle.exploded"]})
    assert "secret" in refused(service, {"url": "http://example.com/h", "events": ["*"], "secret": "short"})
    assert service.call("GET", f"{V1}/webhooks") == (200, [])
