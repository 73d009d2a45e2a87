"""A distribution that fails for good, or is aborted, frees what it staged on the edge at once.

Without it the edge kept the transaction open, holding its staged blobs, for
``transaction_ttl`` (a day by default); an abort that raced the uploads in flight cut them off
with 503s and tracebacks. The service and the edge run as real processes;
the edge's own /metrics and data directory say what it still holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.test_distribute_e2e import FAST_RETRIES, Service, public_key, running_service

LARGE = os.urandom(5 * 1024 * 1024 + 3)
FILES = {"app.bin": LARGE, "README.md": b"# app\n", "notes.txt": b"notes\n"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", {**FAST_RETRIES, "DISTRIBUTION_MAX_SERVER_ERRORS": "2"})


def transactions(edge: EdgeProcess) -> dict[str, float]:
    """``edge_transactions`` by state, from the edge's /metrics."""
    status, text = http("GET", edge.url + "/metrics")
    assert status == 200
    return {m[0]: float(m[1]) for m in re.findall(r'^edge_transactions\{state="(\w+)"\} (\S+)$', text, re.M)}


def holds(edge: EdgeProcess, data: bytes) -> bool:
    return any((edge.data_dir / "blobs").rglob(hashlib.sha256(data).hexdigest()))


def wait_for(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() >= deadline:  # a hang guard, not a speed check
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def failed_site(service: Service, dist_id: int) -> dict[str, object]:
    done = service.wait("1.0", dist_id)
    assert done["status"] == "Failed", done
    (site,) = done["sites"]
    return site  # type: ignore[no-any-return]


def test_a_job_that_gives_up_on_an_edge_aborts_its_transaction_there_and_nothing_stays_staged(
    service: Service, edge_server: EdgeProcess
) -> None:
    """Every blob went over, then every commit answered 500 until the service gave up."""
    faults = Faults(server_errors=1000, only="/commit")
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        trust(edge_server, public_key(service))
        service.add_edge("us-east-1", proxy.url, distributor_token(edge_server))
        service.signed_bundle("1.0", FILES)
        site = failed_site(service, service.distribute("1.0"))
        assert "gave up after 2 attempts" in str(site["general_error"]), site
        wait_for("the edge's transaction to be aborted", lambda: transactions(edge_server).get("ABORTED") == 1)
    finally:
        proxy.stop()
    assert transactions(edge_server) == {"OPEN": 0, "COMMITTED": 0, "ABORTED": 1, "EXPIRED": 0}
    assert not any((edge_server.data_dir / "staging").iterdir()), "nothing staged is left"
    assert not any(holds(edge_server, data) for data in FILES.values()), "blobs of the aborted push are freed"
    assert download(edge_server.url, f"{SOURCE_REPO}/app/1.0/README.md")[0] == 404
    assert "aborted transaction" in service.process.log_tail(200)


def test_a_job_failed_by_a_blob_damaged_at_the_source_aborts_its_edge_transaction(
    service: Service, edge_server: EdgeProcess
) -> None:
    trust(edge_server, public_key(service))
    service.add_edge("us-east-1", edge_server.url, distributor_token(edge_server))
    service.signed_bundle("1.0", FILES)
    (stored,) = (service.process.data_dir / "blobs").rglob(hashlib.sha256(LARGE).hexdigest())
    stored.unlink()
    site = failed_site(service, service.distribute("1.0"))
    assert "missing from the service's storage" in str(site["general_error"]), site
    wait_for("the edge's transaction to be aborted", lambda: transactions(edge_server).get("ABORTED") == 1)
    assert transactions(edge_server)["OPEN"] == 0
    assert not any((edge_server.data_dir / "staging").iterdir())
    assert not holds(edge_server, FILES["README.md"])


def test_a_push_refused_at_start_has_no_transaction_to_abort_and_the_edge_stays_empty(
    service: Service, edge_server: EdgeProcess
) -> None:
    """Not trusted by the edge: refused (422) before anything is opened there."""
    service.add_edge("us-east-1", edge_server.url, distributor_token(edge_server))
    service.signed_bundle("1.0", FILES)
    site = failed_site(service, service.distribute("1.0"))
    assert "422" in str(site["general_error"]), site
    assert transactions(edge_server) == {"OPEN": 0, "COMMITTED": 0, "ABORTED": 0, "EXPIRED": 0}
    assert "could not abort" not in service.process.log_tail(200)


def test_a_distribution_aborted_while_large_blobs_upload_ends_cleanly_on_the_edge(
    service: Service, edge_server: EdgeProcess
) -> None:
    """The abort races the uploads in flight: each is cut off without an error on the edge."""
    large = {f"part-{i}.bin": os.urandom(4 * 1024 * 1024 + i) for i in range(3)}
    faults = Faults(upload_rate=2 * 1024 * 1024, only="/blobs/")
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        trust(edge_server, public_key(service))
        service.add_edge("us-east-1", proxy.url, distributor_token(edge_server))
        service.signed_bundle("1.0", large)
        dist_id = service.distribute("1.0")
        wait_for("uploads under way", lambda: faults.upload_bytes > 1024 * 1024)
        status, body = service.call("PUT", "/distribution/api/v1/distribution/app/1.0/abort")
        assert status == 202, body
        wait_for("the edge's transaction to be aborted", lambda: transactions(edge_server).get("ABORTED") == 1)
        wait_for("the cut uploads to end", lambda: not any((edge_server.data_dir / "staging").iterdir()))
    finally:
        proxy.stop()
    assert service.status("1.0", dist_id)["sites"][0]["general_error"] == "aborted"
    assert transactions(edge_server)["OPEN"] == 0
    assert not any(holds(edge_server, data) for data in large.values())
    lines = [json.loads(line) for line in edge_server.log_tail(400).splitlines() if line.startswith("{")]
    loud = [e for e in lines if e["level"] in ("error", "critical") or "exc" in e]
    assert not loud, loud
    assert not any(e.get("status") == 503 for e in lines), "no upload answered 'Storage is unavailable'"
