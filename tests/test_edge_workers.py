"""``edge serve --workers N``: several processes on one port, as one edge.

Real processes only. Each request goes out on a new connection, which the kernel hands to
one of the workers (``SO_REUSEPORT``); the worker that answered says so in ``X-Edge-Worker``.
What an operator relies on: a change made through one worker is seen by every worker at
once; every download is counted once; a transaction's steps may land on any worker; the
scrub runs once per node; a dead worker comes back and the port keeps answering; SIGTERM
stops everything.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from devstack.services import EdgeProcess
from tests.edge_setup import distributor_token, trust
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_distribute_e2e import FAST_RETRIES, Service, public_key, running_service
from tests.test_edge_transactions import KEYS, TX, manifest_of, sha256, signed, tx_id

UPLOADS = "artifactory-edge-uploads"
WORKER = "X-Edge-Worker"
PING = "/artifactory/api/system/ping"
AUDIT = "/artifactory/api/audit"
RULES = "/artifactory/api/access/rules"
# A hang guard, not a speed check.
GIVE_UP = 60.0


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback, whatever proxy a developer has set
    return session


FRESH = _session()
FRESH.headers["Connection"] = "close"  # every request on a new connection: any worker may take it


def call(edge: EdgeProcess, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    """One request on a new connection."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return FRESH.request(method, edge.url + path, headers=headers, timeout=60, **kwargs)


def through_every_worker(edge: EdgeProcess, check: Callable[[requests.Response], None], send: Callable[[], Any]) -> int:
    """Send requests until each worker has answered at least one, checking every answer; the count sent."""
    seen: set[str] = set()
    sent = 0
    deadline = time.monotonic() + GIVE_UP
    while len(seen) < edge.workers:
        response = send()
        check(response)
        seen.add(response.headers[WORKER])
        sent += 1
        if time.monotonic() > deadline:
            pytest.fail(f"only workers {sorted(seen)} answered")
    return sent


def on_worker(edge: EdgeProcess, number: int) -> requests.Session:
    """A session whose one kept-alive connection reached worker ``number``."""
    deadline = time.monotonic() + GIVE_UP
    while time.monotonic() < deadline:
        session = _session()
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
        if session.get(edge.url + PING, timeout=30).headers[WORKER] == str(number):
            return session
        session.close()
    pytest.fail(f"no connection reached worker {number}")


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    """An edge of three workers, which must stop cleanly at the end."""
    process = EdgeProcess(tmp_path / "edge", workers=3).start()
    try:
        yield process
    finally:
        code = process.stop()
        print(f"edge log, last lines:\n{process.log_tail()}")
    assert code == 0, process.log_tail()


def put(edge: EdgeProcess, path: str, data: bytes) -> None:
    assert call(edge, "PUT", f"/artifactory/{UPLOADS}/{path}", edge.admin_token, data=data).status_code == 201


def get(edge: EdgeProcess, path: str, token: str | None = None) -> requests.Response:
    return call(edge, "GET", f"/artifactory/{UPLOADS}/{path}", token)


def expect(status: int, body: bytes | None = None) -> Callable[[requests.Response], None]:
    def check(response: requests.Response) -> None:
        assert response.status_code == status, (response.headers.get(WORKER), response.text[:200])
        if body is not None:
            assert response.content == body, response.headers.get(WORKER)

    return check


def test_every_worker_answers_on_the_one_port(edge: EdgeProcess) -> None:
    assert len(edge.worker_pids()) == 3
    sent = through_every_worker(edge, expect(200, b"OK"), lambda: call(edge, "GET", PING))
    assert sent >= 3


def test_a_file_changed_through_one_worker_is_seen_changed_by_every_worker_at_once(edge: EdgeProcess) -> None:
    """Each worker keeps hot catalog entries in memory: an overwrite or a delete made through
    another worker must not leave any of them answering the old bytes."""
    put(edge, "app/config.json", b"version 1\n")
    through_every_worker(edge, expect(200, b"version 1\n"), lambda: get(edge, "app/config.json"))  # all cache it
    for version in (2, 3):
        put(edge, "app/config.json", f"version {version}\n".encode())
        body = f"version {version}\n".encode()
        through_every_worker(edge, expect(200, body), lambda: get(edge, "app/config.json"))
    assert call(edge, "DELETE", f"/artifactory/{UPLOADS}/app/config.json", edge.admin_token).status_code == 204
    through_every_worker(edge, expect(404), lambda: get(edge, "app/config.json"))


def test_a_token_revoked_through_one_worker_is_refused_by_every_worker_at_once(edge: EdgeProcess) -> None:
    put(edge, "private/notes.txt", b"notes\n")
    body = {"username": "ci", "role": "reader"}
    made = call(edge, "POST", "/access/api/v1/tokens", edge.admin_token, json=body).json()
    token, token_id = made["access_token"], made["token_id"]
    me = "/access/api/v1/tokens"  # a reader may not list tokens: 403 with a known token, 401 with a dead one
    through_every_worker(edge, expect(403), lambda: call(edge, "GET", me, token))  # every worker knows it
    assert call(edge, "DELETE", f"/access/api/v1/tokens/{token_id}", edge.admin_token).status_code in (200, 204)
    through_every_worker(edge, expect(401), lambda: call(edge, "GET", me, token))


def test_a_rule_set_through_one_worker_applies_in_every_worker_at_once(edge: EdgeProcess) -> None:
    put(edge, "app/tool.sh", b"#!/bin/sh\n")
    through_every_worker(edge, expect(200), lambda: get(edge, "app/tool.sh"))
    deny = {"rules": [{"repos": [UPLOADS], "deny_cidrs": ["127.0.0.0/8"]}]}
    assert call(edge, "PUT", RULES, edge.admin_token, json=deny).status_code == 200
    through_every_worker(edge, expect(403), lambda: get(edge, "app/tool.sh"))
    assert call(edge, "DELETE", RULES, edge.admin_token).status_code in (200, 204)
    through_every_worker(edge, expect(200, b"#!/bin/sh\n"), lambda: get(edge, "app/tool.sh"))


def audit_downloads(edge: EdgeProcess, path: str) -> int:
    query = {"action": "download", "path": path, "limit": "1000"}
    answer = call(edge, "GET", AUDIT, edge.admin_token, params=query)
    assert answer.status_code == 200, answer.text
    return len(answer.json()["records"])


def test_every_download_through_every_worker_is_audited_and_counted_exactly_once(edge: EdgeProcess) -> None:
    data = os.urandom(5000)
    put(edge, "app/counted.bin", data)
    sent = through_every_worker(edge, expect(200, data), lambda: get(edge, "app/counted.bin"))
    for _ in range(40 - sent):
        expect(200, data)(get(edge, "app/counted.bin"))
    deadline = time.monotonic() + GIVE_UP
    while audit_downloads(edge, "app/counted.bin") < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # every worker's queue of records has been written (flushed every 0.5 s) by now
    assert audit_downloads(edge, "app/counted.bin") == 40
    stats = call(edge, "GET", f"/artifactory/api/storage/{UPLOADS}/app/counted.bin?stats", edge.admin_token)
    assert stats.json()["downloadCount"] == 40


def test_a_transaction_started_on_one_worker_uploaded_to_another_and_committed_on_a_third_serves_everywhere(
    edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory
) -> None:
    admin = {"Authorization": f"Bearer {edge.admin_token}"}
    assert call(edge, "POST", KEYS, edge.admin_token, json={"alias": "alice", "public_key": keys.alice.public}).ok
    files = {f"f{i}.txt": f"file {i}\n".encode() * 100 for i in range(4)}
    body = signed(key_factory, keys.alice, manifest_of(files))
    tid = tx_id(body)
    one, two, three = (on_worker(edge, n) for n in (1, 2, 3))
    for session in (one, two, three):
        session.headers.update(admin)
    started = one.post(edge.url + TX, json=body, timeout=60)
    assert (started.status_code, started.headers[WORKER]) == (201, "1"), started.text
    for index, data in enumerate(files.values()):
        session = two if index % 2 else three
        put_blob = session.put(f"{edge.url}{TX}/{tid}/blobs/{sha256(data)}", data=data, timeout=60)
        assert put_blob.status_code in (200, 201), put_blob.text
    first = f"/artifactory/releases-local/app/1.0.0/{next(iter(files))}"
    through_every_worker(edge, expect(404), lambda: call(edge, "GET", first))  # nothing shows before the commit
    committed = three.post(f"{edge.url}{TX}/{tid}/commit", timeout=60)
    assert (committed.status_code, committed.headers[WORKER]) == (200, "3"), committed.text
    assert committed.json()["state"] == "COMMITTED"
    assert one.post(f"{edge.url}{TX}/{tid}/commit", timeout=60).json()["state"] == "COMMITTED"  # again: the same
    for path, data in files.items():
        target = f"/artifactory/releases-local/app/1.0.0/{path}"
        through_every_worker(edge, expect(200, data), lambda target=target: call(edge, "GET", target))


def test_a_distribution_to_a_three_worker_edge_completes_verified(tmp_path: Path, edge: EdgeProcess) -> None:
    files = {
        "app.tar.gz": os.urandom(3 * 1024 * 1024),  # large: its upload closes its connection
        **{f"conf-{i}.yaml": f"setting: {i}\n".encode() for i in range(30)},
    }
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        push_and_check(service, edge, files)


def push_and_check(service: Service, edge: EdgeProcess, files: dict[str, bytes]) -> None:
    trust(edge, public_key(service))
    service.add_edge("edge", edge.url, distributor_token(edge))
    service.signed_bundle("2.0.0", files)
    done = service.wait("2.0.0", service.distribute("2.0.0"))
    assert done["status"] == "Completed", done
    for path, data in files.items():
        target = f"/artifactory/releases-local/app/2.0.0/{path}"
        digest = hashlib.sha256(data).hexdigest()

        def check(response: requests.Response, digest: str = digest) -> None:
            assert response.status_code == 200, (response.headers.get(WORKER), response.url, response.text)
            assert hashlib.sha256(response.content).hexdigest() == digest

        through_every_worker(edge, check, lambda target=target: call(edge, "GET", target))


def scrub_passes(edge: EdgeProcess) -> int:
    return edge.log_path.read_text().count('"scrub: pass done')


def test_the_scrub_and_its_sweep_run_once_per_node_not_once_per_worker(tmp_path: Path) -> None:
    """At the node's first start one pass runs (none was ever made), not one per worker. A pass
    asked for through one worker runs there; asked through the others meanwhile, they answer
    409 (it runs elsewhere), and the node makes one pass in all."""
    slow = {"EDGE_SCRUB_RATE": "1024"}  # bytes/s: the pass over a 6 KiB file lasts seconds
    with EdgeProcess(tmp_path / "edge", workers=3, env=slow) as edge:
        wait_until(lambda: scrub_passes(edge) >= 1)
        put(edge, "app/scrubbed.bin", os.urandom(6 * 1024))
        time.sleep(1.0)
        assert scrub_passes(edge) == 1
        first = call(edge, "POST", "/artifactory/api/scrub", edge.admin_token)
        assert first.status_code == 202, first.text
        runner = first.headers[WORKER]
        answers: dict[str, set[int]] = {}

        def record(response: requests.Response) -> None:
            answers.setdefault(response.headers[WORKER], set()).add(response.status_code)

        through_every_worker(edge, record, lambda: call(edge, "POST", "/artifactory/api/scrub", edge.admin_token))
        assert answers.pop(runner, {202}) == {202}  # running here: answered as it is
        assert all(statuses == {409} for statuses in answers.values()), answers
        wait_until(lambda: scrub_passes(edge) >= 2)
        time.sleep(1.0)
        assert scrub_passes(edge) == 2
        assert edge.log_path.read_text().count("unreferenced deleted") == 2  # the sweep ends each pass


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GIVE_UP
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting")
        time.sleep(0.1)


def test_a_worker_killed_9_is_restarted_and_the_port_keeps_answering(edge: EdgeProcess) -> None:
    put(edge, "app/kept.txt", b"kept\n")
    before = edge.worker_pids()
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    for _ in range(30):  # those reaching the dead worker's socket wait for its replacement
        expect(200, b"kept\n")(get(edge, "app/kept.txt"))
    deadline = time.monotonic() + GIVE_UP
    while (len(edge.worker_pids()) < 3 or victim in edge.worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = edge.worker_pids()
    assert len(after) == 3 and victim not in after and set(before) - {victim} <= set(after)
    assert "was killed by SIGKILL; restarting it in 0.5 s" in edge.log_path.read_text()
    through_every_worker(edge, expect(200, b"kept\n"), lambda: get(edge, "app/kept.txt"))
    (replacement,) = set(after) - set(before)
    os.kill(replacement, signal.SIGKILL)  # dead again soon after its start: it waits twice as long
    wait_until(lambda: "restarting it in 1.0 s" in edge.log_path.read_text())
    wait_until(lambda: len(edge.worker_pids()) == 3 and replacement not in edge.worker_pids())
    through_every_worker(edge, expect(200, b"kept\n"), lambda: get(edge, "app/kept.txt"))


def test_sigterm_stops_every_worker_cleanly_and_leaves_no_process(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", workers=3).start()
    workers = edge.worker_pids()
    assert len(workers) == 3
    assert edge.stop() == 0, edge.log_tail()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert edge.log_tail().splitlines()[-1].find('"edge node stopped"') != -1


def test_workers_die_with_a_supervisor_killed_9_and_a_new_start_takes_the_port(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", workers=2).start()
    workers = edge.worker_pids()
    put(edge, "app/after-crash.txt", b"still here\n")
    os.kill(edge.pid, signal.SIGKILL)
    assert edge.wait(20) == -signal.SIGKILL
    deadline = time.monotonic() + GIVE_UP
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    edge.start()
    try:
        through_every_worker(edge, expect(200, b"still here\n"), lambda: get(edge, "app/after-crash.txt"))
    finally:
        assert edge.stop() == 0, edge.log_tail()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_a_scrape_through_any_worker_counts_the_requests_of_every_worker(edge: EdgeProcess) -> None:
    """Every worker answers /metrics for the node: the sum of every worker's counts (another
    worker's at most a second old), whichever worker the scrape reaches."""
    put(edge, "app/metered.txt", b"metered\n")
    sent = through_every_worker(edge, expect(200), lambda: get(edge, "app/metered.txt"))
    time.sleep(1.5)  # every worker has written its counts since
    downloads = 'http_requests_total{method="GET",route="download",status="200"}'

    def check(response: requests.Response) -> None:
        assert metric(response.text, downloads) == sent, response.headers[WORKER]

    through_every_worker(edge, check, lambda: call(edge, "GET", "/metrics"))


def test_an_upload_on_one_worker_is_cut_off_when_another_worker_aborts_its_transaction(
    edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory
) -> None:
    """The abort reaches a worker other than the upload's: the upload still ends with 409 within
    seconds, and nothing of the transaction stays staged or stored."""
    assert call(edge, "POST", KEYS, edge.admin_token, json={"alias": "alice", "public_key": keys.alice.public}).ok
    big = os.urandom(8 * 1024 * 1024)
    body = signed(key_factory, keys.alice, manifest_of({"big.bin": big}))
    tid = tx_id(body)
    assert call(edge, "POST", TX, edge.admin_token, json=body).status_code == 201
    uploading, aborting = connection_to(edge, 2), connection_to(edge, 1)
    try:
        uploading.putrequest("PUT", f"{TX}/{tid}/blobs/{sha256(big)}")
        uploading.putheader("Authorization", f"Bearer {edge.admin_token}")
        uploading.putheader("Content-Length", str(len(big)))
        uploading.endheaders()
        uploading.send(big[: 2 * 1024 * 1024])  # then nothing more: the upload waits for the rest
        staging = edge.data_dir / "staging" / tid
        wait_until(lambda: any(staging.glob("*.part")))
        aborting.request("POST", f"{TX}/{tid}/abort", headers={"Authorization": f"Bearer {edge.admin_token}"})
        aborted = aborting.getresponse()
        assert aborted.status in (200, 204), aborted.read()
        aborted.read()
        answer = uploading.getresponse()
        assert answer.status == 409, answer.read()
        assert b"aborted while this upload was under way" in answer.read()
    finally:
        uploading.close()
        aborting.close()
    assert call(edge, "GET", f"{TX}/{tid}", edge.admin_token).json()["state"] == "ABORTED"
    wait_until(lambda: not staging.exists())
    assert not (edge.data_dir / "blobs").exists() or sha256(big) not in {
        p.name for p in (edge.data_dir / "blobs").rglob("*")
    }


def connection_to(edge: EdgeProcess, number: int) -> http.client.HTTPConnection:
    """A kept-alive connection that reached worker ``number``."""
    deadline = time.monotonic() + GIVE_UP
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=GIVE_UP)
        connection.request("GET", PING)
        response = connection.getresponse()
        response.read()
        if response.headers[WORKER] == str(number):
            return connection
        connection.close()
    pytest.fail(f"no connection reached worker {number}")


def test_a_node_whose_first_worker_cannot_start_stops_with_status_1_and_says_why(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", workers=2)
    (edge.data_dir / "catalog.db").mkdir(parents=True)  # a folder where the database should be
    done = subprocess.run(
        edge.command(0), env=edge.environment(), capture_output=True, text=True, timeout=GIVE_UP, check=False
    )
    assert done.returncode == 1
    assert "worker 1 did not start" in done.stderr
    assert "ready with" not in done.stderr
