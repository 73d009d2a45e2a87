"""``node-agent`` against the control-plane double: enrollment, check-ins, backoff, revocation, key rotation.

Real ``node-agent`` processes where the agent meets another process (enroll, run); the
key rotation rules through one in-process check-in each.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.loop import EXIT_REVOKED, Agent
from agent.outbox import Outbox
from agent.settings import load_settings
from agent.trust import DeviceTrust
from tests.agent_plane import ControlPlane, enrolled_device, exit_of, start_agent, start_plane, stop_agent, wait_for
from tests.gpg_keys import KeyFactory, KeySet, TestKey, key_factory_fixture, keys_fixture  # noqa: F401
from wire import fleet

MiB = 1024 * 1024


@pytest.fixture(name="plane")
def plane_fixture(tmp_path: Path) -> Iterator[ControlPlane]:
    yield from start_plane(tmp_path)


def enrollment(keys: list[TestKey]) -> fleet.Enrollment:
    public = tuple(fleet.PublicKey(k.fingerprint, k.public) for k in keys)
    return fleet.Enrollment("dev-7", "x", "pos-emea", "device-credential-0001", 1, public)


def test_enroll_stores_the_identity_0600_and_trusts_the_signing_keys(
    plane: ControlPlane, keys: KeySet, key_factory: KeyFactory, tmp_path: Path
) -> None:
    plane.enrollment = enrollment([keys.alice])
    data_dir = tmp_path / "var" / "node-agent"
    enroll = start_agent(
        "enroll", "--server", plane.url, "--token", "enr-1", "--name", "till-0042", "--tag", "site=lisbon",
        "--data-dir", str(data_dir),
    )  # fmt: skip
    code, out = exit_of(enroll)
    assert code == 0, out
    assert "enrolled till-0042 as device dev-7 in group pos-emea" in out
    identity = data_dir / "identity.json"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    stored = json.loads(identity.read_text())
    assert stored["credential"] == "device-credential-0001" and stored["server"] == plane.url
    assert DeviceTrust(data_dir).fingerprints == [keys.alice.fingerprint]
    status = start_agent("status", "--data-dir", str(data_dir))
    code, out = exit_of(status)
    assert code == 0 and "device: till-0042 (dev-7), group pos-emea" in out and "apps: none installed" in out
    assert "last check-in: never" in out
    again = start_agent(
        "enroll", "--server", plane.url, "--token", "enr-1", "--name", "till-0042", "--data-dir", str(data_dir)
    )
    code, out = exit_of(again)
    assert code != 0 and "already holds an identity" in out


@pytest.mark.parametrize("status", [401, 403])
def test_an_expired_enrollment_token_exits_with_the_servers_message_and_writes_nothing(
    plane: ControlPlane, tmp_path: Path, status: int
) -> None:
    plane.enroll_refusal = (status, "Enrollment token expired")
    data_dir = tmp_path / "node-agent"
    enroll = start_agent(
        "enroll", "--server", plane.url, "--token", "old", "--name", "till-0042", "--data-dir", str(data_dir)
    )
    code, out = exit_of(enroll)
    assert code == 1
    assert f"enrollment refused ({status}): Enrollment token expired" in out
    assert not data_dir.exists()


def test_the_agent_checks_in_with_its_heartbeat_and_listens_on_no_port(
    plane: ControlPlane, keys: KeySet, tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    enrolled_device(data_dir, plane.url, [keys.alice])
    agent = start_agent("run", "--data-dir", str(data_dir))
    try:
        wait_for(lambda: len(plane.heartbeats) >= 3, what="three check-ins")
        process = psutil.Process(agent.pid)
        listening = [c for c in process.net_connections(kind="all") if c.status == psutil.CONN_LISTEN]
        assert listening == []
        assert process.memory_info().rss < 60 * MiB
    finally:
        code, log = stop_agent(agent)
    assert code == 0, log
    beat = plane.heartbeats[-1]
    assert beat.agent_version and beat.uptime > 0 and 0 <= beat.cpu_percent <= 100
    assert beat.memory_total > beat.memory_used > 0 and beat.disk_total > beat.disk_free > 0
    assert beat.apps == {} and beat.action is None
    code, out = exit_of(start_agent("status", "--data-dir", str(data_dir)))
    assert code == 0 and re.search(r"last check-in: 20\d\d-\d\d-\d\dT", out), out


def test_a_revoked_credential_stops_the_agent_with_one_clear_line(
    plane: ControlPlane, keys: KeySet, tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    enrolled_device(data_dir, plane.url, [keys.alice])
    plane.revoked = True
    code, log = exit_of(start_agent("run", "--data-dir", str(data_dir)))
    assert code == EXIT_REVOKED
    lines = [line for line in log.splitlines() if "credential revoked" in line]
    assert len(lines) == 1 and "answered 401 (device credential revoked)" in lines[0]


def test_a_control_plane_that_is_down_is_retried_with_capped_backoff_and_reports_wait_for_it(
    plane: ControlPlane, keys: KeySet, tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    enrolled_device(data_dir, plane.url, [keys.alice])
    Outbox(data_dir).put(fleet.Feedback("a-queued", fleet.FeedbackState.SUCCEEDED, version="1.0.0"))
    plane.down = True
    agent = start_agent("run", "--data-dir", str(data_dir), "--max-backoff", "2")
    try:
        wait_for(lambda: len(plane.requests) >= 4, what="four tries while the control plane is down")
        assert plane.heartbeats == [] and plane.feedback == []
        plane.down = False
        wait_for(lambda: plane.heartbeats, what="a check-in once the control plane is back")
    finally:
        code, log = stop_agent(agent)
    assert code == 0, log
    assert [f.action_id for f in plane.feedback] == ["a-queued"]  # the report queued on disk arrives
    waits = [float(w) for w in re.findall(r"retrying in ([0-9.]+) s", log)]
    assert len(waits) >= 3 and waits[0] <= 1 and all(0 < w <= 2 for w in waits)
    assert "keeping the running versions" in log
    assert list((data_dir / "outbox").iterdir()) == []


def test_a_check_in_the_control_plane_refuses_is_logged_and_retried(
    plane: ControlPlane, keys: KeySet, tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    enrolled_device(data_dir, plane.url, [keys.alice])
    plane.refuse_check_ins = 2
    agent = start_agent("run", "--data-dir", str(data_dir), "--max-backoff", "1")
    try:
        wait_for(lambda: plane.heartbeats, what="a check-in the control plane takes")
    finally:
        code, log = stop_agent(agent)
    assert code == 0, log
    assert log.count("control plane refused a call (400: Invalid heartbeat: unknown field(s) 'sensor')") == 2


def keys_answer(factory: KeyFactory, signer: TestKey, listed: list[TestKey], created: int) -> fleet.SigningKeys:
    public = tuple(fleet.PublicKey(k.fingerprint, k.public) for k in listed)
    document = fleet.encode_keys_document(public, created)
    return fleet.SigningKeys(document, factory.sign(signer, document.encode()).decode("ascii"))


def offer_keys(plane: ControlPlane, answer: fleet.SigningKeys) -> None:
    plane.keys = answer
    plane.keys_digest = hashlib.sha256(answer.document.encode()).hexdigest()


@pytest.fixture(name="agent")
def agent_fixture(plane: ControlPlane, keys: KeySet, tmp_path: Path) -> Agent:
    enrolled_device(tmp_path / "agent", plane.url, [keys.alice])
    return Agent(load_settings(tmp_path / "agent"))


def test_a_new_key_set_signed_by_a_trusted_key_is_accepted_and_a_dropped_key_no_longer_counts(
    plane: ControlPlane, agent: Agent, keys: KeySet, key_factory: KeyFactory
) -> None:
    now = int(time.time() * 1000)
    offer_keys(plane, keys_answer(key_factory, keys.alice, [keys.alice, keys.bob], now))
    agent.check_in()
    assert agent.trust.fingerprints == sorted([keys.alice.fingerprint, keys.bob.fingerprint])
    data = b"signed by bob"
    assert agent.trust.verify(data, key_factory.sign(keys.bob, data).decode()) == keys.bob.fingerprint
    offer_keys(plane, keys_answer(key_factory, keys.bob, [keys.bob], now + 1))
    agent.check_in()
    assert agent.trust.fingerprints == [keys.bob.fingerprint]
    with pytest.raises(Exception, match="does not trust|not a trusted key"):
        agent.trust.verify(data, key_factory.sign(keys.alice, data).decode())


@pytest.mark.parametrize("case", ["untrusted signer", "replayed older set", "same age"])
def test_a_key_set_not_signed_by_a_trusted_key_or_not_newer_is_refused(
    plane: ControlPlane, agent: Agent, keys: KeySet, key_factory: KeyFactory, case: str
) -> None:
    now = int(time.time() * 1000)
    offer_keys(plane, keys_answer(key_factory, keys.alice, [keys.alice], now))
    agent.check_in()
    before = agent.trust.state()
    if case == "untrusted signer":
        answer = keys_answer(key_factory, keys.mallory, [keys.mallory], now + 1)
    else:
        answer = keys_answer(key_factory, keys.alice, [keys.alice, keys.mallory], now - 1 if "older" in case else now)
    offer_keys(plane, answer)
    agent.check_in()
    assert agent.trust.state() == before
    asked = len([r for r in plane.requests if r.endswith("/keys")])
    agent.check_in()  # a refused set is not fetched again at every poll
    assert len([r for r in plane.requests if r.endswith("/keys")]) == asked


def test_a_cancel_for_an_action_the_device_never_started_is_reported_canceled(
    plane: ControlPlane, agent: Agent
) -> None:
    app = fleet.AppSpec("till", "till-app", "/opt/till")
    plane.actions = [fleet.Action("a-9", fleet.ActionKind.CANCEL, "d1", app, "2.0.0")]
    agent.check_in()
    wait_for(lambda: plane.final("a-9"), what="the CANCELED report")
    assert plane.final("a-9").state == fleet.FeedbackState.CANCELED  # type: ignore[union-attr]
