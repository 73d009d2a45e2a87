"""Downloads from real edge processes: nearest edge, resume, failover, tampered bytes, expired tokens.

The files sit on each edge in its uploads repo; the device's signed URLs are Ed25519
tokens minted here with a key the edges were told to trust (``POST
/artifactory/api/signed/keys``), as the control plane mints them. The agent's flow runs
in this process against the control-plane double, which offers the edges.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.flow import staging_dir
from devstack.services import EdgeProcess
from tests.agent_device import Device, assert_whole, device_fixture, plane_fixture  # noqa: F401
from tests.agent_plane import Bundle, wait_for
from tests.edge_cutter import EdgeRelay
from tests.edge_setup import http
from tests.gpg_keys import key_factory_fixture, keys_fixture  # noqa: F401
from wire import fleet

MiB = 1024 * 1024
KID = "fleet-test"
URL_KEY = Ed25519PrivateKey.generate()
BIG = os.urandom(3 * MiB + 123)  # larger than an edge keeps in memory: sent from disk by sendfile
HUGE = os.urandom(24 * MiB)  # more than loopback's socket buffers hold, so a killed edge cuts it short


def mint(target: str, lifetime: int = 600) -> str:
    now = int(time.time())
    claims = {"sub": target, "iss": "fleet", "iat": now - 5, "exp": now + lifetime}
    return jwt.encode(claims, URL_KEY, algorithm="EdDSA", headers={"kid": KID})


@pytest.fixture(name="edges")
def edges_fixture(tmp_path: Path) -> Iterator[list[EdgeProcess]]:
    config = tmp_path / "edge.toml"
    config.write_text("uploads_anonymous_read = false\n")
    pem = (
        URL_KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    started = []
    try:
        for name in ("edge-a", "edge-b"):
            edge = EdgeProcess(tmp_path / name, config=config).start()
            started.append(edge)
            status, body = http(
                "POST", edge.url + "/artifactory/api/signed/keys", edge.admin_token, {"kid": KID, "public_key": pem}
            )
            assert status in (200, 201), body
        yield started
    finally:
        for edge in started:
            edge.stop()


def put_on(edge: EdgeProcess, bundle: Bundle) -> None:
    for target, data in bundle.files.items():
        request = urllib.request.Request(
            f"{edge.url}/artifactory/{target}",
            data=data,
            method="PUT",
            headers={"Authorization": f"Bearer {edge.admin_token}"},
        )
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as resp:
            assert resp.status == 201


def offer(device: Device, bundle: Bundle, edges: list[tuple[str, str]], **extra: object) -> fleet.Action:
    action = device.action(bundle, **extra)  # type: ignore[arg-type]
    offers = [fleet.EdgeOffer(name, url) for name, url in edges]
    device.plane.sources[action.action_id] = bundle.sources(offers, token=mint)  # type: ignore[arg-type]
    return action


def publish_big(device: Device, version: str, data: bytes = BIG) -> Bundle:
    return device.publish(version, extra={"data.bin": data})


def bundle_on_both_tampered_on_a(device: Device, edges: list[EdgeProcess]) -> Bundle:
    """A bundle on both edges, whose big file edge-a's disk then changes by one bit in its middle."""
    bundle = publish_big(device, "1.0.0")
    for edge in edges:
        put_on(edge, bundle)
    found = list(edges[0].data_dir.rglob(hashlib.sha256(BIG).hexdigest()))
    assert len(found) == 1, found
    tampered = bytearray(found[0].read_bytes())
    tampered[len(tampered) // 2] ^= 1
    found[0].write_bytes(bytes(tampered))
    return bundle


def test_a_dropped_link_is_resumed_with_a_range_request(device: Device, edges: list[EdgeProcess]) -> None:
    bundle = publish_big(device, "1.0.0")
    put_on(edges[0], bundle)
    relay = EdgeRelay(edges[0].port, cut_after=MiB, cut_path="data.bin")
    try:
        action = offer(device, bundle, [("edge-a", relay.url)])
        device.flow().start(action)
    finally:
        relay.close()
    assert device.plane.final(action.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    assert_whole(device, bundle)
    big = [r for r in relay.requests if "data.bin" in r.split("\r\n", 1)[0]]
    assert len(big) == 2 and "range: bytes=" in big[1].lower()
    resumed_at = int(big[1].lower().split("range: bytes=", 1)[1].split("-", 1)[0])
    assert MiB - 4096 < resumed_at < MiB  # all the body bytes that came before the cut (after the headers)


def test_an_edge_killed_mid_file_fails_over_to_the_other_edge_which_resumes_the_same_file(
    device: Device, edges: list[EdgeProcess], caplog: pytest.LogCaptureFixture
) -> None:
    bundle = publish_big(device, "1.0.0", HUGE)
    for edge in edges:
        put_on(edge, bundle)
    slow_b = EdgeRelay(edges[1].port, ping_delay=1.0)  # so edge-a measures fastest and goes first
    action = offer(device, bundle, [("edge-b", slow_b.url), ("edge-a", edges[0].url)])
    flow = device.flow(bandwidth_limit=4 * MiB)  # the cap keeps the transfer going long enough to cut
    part = staging_dir(device.data_dir, action.action_id) / (hashlib.sha256(HUGE).hexdigest() + ".part")
    worker = threading.Thread(target=flow.start, args=(action,))
    try:
        with caplog.at_level(logging.INFO):
            worker.start()
            wait_for(lambda: part.exists() and part.stat().st_size >= MiB, what="part of the file from edge-a")
            os.kill(edges[0].pid, signal.SIGKILL)
            worker.join(120)
    finally:
        slow_b.close()
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.SUCCEEDED, final
    assert_whole(device, bundle)
    big = [r for r in slow_b.requests if "data.bin" in r.split("\r\n", 1)[0]]
    assert len(big) == 1 and "range: bytes=" in big[0].lower()  # edge-b sent only the rest
    assert "edges by speed: edge-a" in caplog.text


def test_a_tampered_blob_on_one_edge_is_refused_by_name_and_taken_from_the_other(
    device: Device, edges: list[EdgeProcess]
) -> None:
    bundle = bundle_on_both_tampered_on_a(device, edges)
    slow_b = EdgeRelay(edges[1].port, ping_delay=1.0)
    try:
        action = offer(device, bundle, [("edge-b", slow_b.url), ("edge-a", edges[0].url)])
        device.flow().start(action)
    finally:
        slow_b.close()
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.SUCCEEDED
    refusals = [f.message for f in device.plane.feedback if f.message.startswith("refused")]
    target = next(t for t in bundle.files if t.endswith("data.bin"))
    assert len(refusals) == 1 and f"refused {target} from edge edge-a" in refusals[0]
    assert_whole(device, bundle)


def test_a_file_pieced_from_two_edges_that_does_not_match_names_both_then_the_tampered_one_alone(
    device: Device, edges: list[EdgeProcess]
) -> None:
    bundle = bundle_on_both_tampered_on_a(device, edges)
    cut_a = EdgeRelay(edges[0].port, cut_after=2 * MiB, cut_path="data.bin")  # after the damaged byte
    slow_b = EdgeRelay(edges[1].port, ping_delay=1.0)
    try:
        action = offer(device, bundle, [("edge-b", slow_b.url), ("edge-a", cut_a.url)])
        device.flow().start(action)
    finally:
        cut_a.close()
        slow_b.close()
    final = device.plane.final(action.action_id)
    assert final is not None and final.state == fleet.FeedbackState.SUCCEEDED
    target = next(t for t in bundle.files if t.endswith("data.bin"))
    refusals = [f.message for f in device.plane.feedback if f.message.startswith("refused")]
    assert [r.split(": ", 1)[0] for r in refusals] == [
        f"refused {target} from edges edge-a, edge-b",
        f"refused {target} from edge edge-a",
    ]
    assert_whole(device, bundle)


def test_expired_tokens_make_the_agent_ask_for_sources_again(device: Device, edges: list[EdgeProcess]) -> None:
    bundle = publish_big(device, "1.0.0")
    put_on(edges[0], bundle)
    action = device.action(bundle)
    stale = bundle.sources([fleet.EdgeOffer("edge-a", edges[0].url)], token=lambda t: mint(t, lifetime=-60))  # type: ignore[arg-type]
    fresh = bundle.sources([fleet.EdgeOffer("edge-a", edges[0].url)], token=mint)  # type: ignore[arg-type]
    device.plane.sources[action.action_id] = [stale, fresh]  # type: ignore[assignment]
    device.flow().start(action)
    assert device.plane.final(action.action_id).state == fleet.FeedbackState.SUCCEEDED  # type: ignore[union-attr]
    asked = [r for r in device.plane.requests if r.endswith(f"/actions/{action.action_id}/sources")]
    assert len(asked) == 2
    assert_whole(device, bundle)
