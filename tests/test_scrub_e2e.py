"""Bytes at rest that rot or are edited: found by the scrub, never served, audited, counted, and
sent again by `distribution repair` (or the next distribution), after which they serve again.

The Distribution service and an edge run as real processes; a byte is flipped in a stored blob
on disk, as a failing disk or a careless hand would; everything else goes through the REST
API, the CLIs, /metrics and the audit trail, as an operator would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import find_program, service_environment
from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.test_distribute_e2e import FAST_RETRIES, Service, public_key, running_service

BIG = os.urandom(3 * 1024 * 1024 + 17)  # served by sendfile
SMALL = b"a small file, served from memory\n" * 100
FILES = {"app.bin": BIG, "notes.txt": SMALL}
QUIET_SCRUB = {"SCRUB_ENABLED": "false", "SCRUB_RATE": str(1024**3)}  # passes only when asked, at full speed


def target(name: str, version: str = "1.0") -> str:
    return f"{SOURCE_REPO}/app/{version}/{name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    env = {**FAST_RETRIES, **{f"DISTRIBUTION_{k}": v for k, v in QUIET_SCRUB.items()}}
    yield from running_service(tmp_path / "distribution", env)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    process = EdgeProcess(tmp_path / "edge", env={f"EDGE_{k}": v for k, v in QUIET_SCRUB.items()}).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log_tail()


def distributed(service: Service, edge: EdgeProcess, version: str = "1.0") -> None:
    trust(edge, public_key(service))
    service.add_edge("us-east-1", edge.url, distributor_token(edge))
    service.signed_bundle(version, FILES)
    done = service.wait(version, service.distribute(version))
    assert done["status"] == "Completed", done


def flip_a_byte(root: Path, data: bytes) -> Path:
    """Flip one byte in the middle of the blob of ``data`` in the local store of the data dir ``root``."""
    (blob,) = (root / "blobs" / "blobs").rglob(sha256(data))
    with open(blob, "r+b") as f:
        f.seek(len(data) // 2)
        byte = f.read(1)
        f.seek(len(data) // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    return blob


def cli(program: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [find_program(program), *args]
    return subprocess.run(command, env=service_environment(env), capture_output=True, text=True, timeout=120)


def edge_cli(edge: EdgeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("edge", {"EDGE_URL": edge.url, "EDGE_TOKEN": edge.admin_token}, *args)


def service_cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DISTRIBUTION_URL": service.process.url, "DISTRIBUTION_TOKEN": service.process.admin_token}
    return cli("distribution", env, *args)


def scrub_status(url: str, token: str) -> dict[str, Any]:
    status, body = http("GET", url + "/artifactory/api/scrub", token)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def metric(url: str, name: str) -> float:
    status, text = http("GET", url + "/metrics")
    assert status == 200
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def refused(url: str, path: str) -> tuple[int, str]:
    status, body = http("GET", f"{url}/artifactory/{path}")
    assert isinstance(body, dict), body
    (error,) = body["errors"]
    return status, str(error["message"])


def test_a_flipped_byte_on_an_edge_is_quarantined_never_served_audited_counted_and_repaired(
    service: Service, edge: EdgeProcess
) -> None:
    distributed(service, edge)
    flip_a_byte(edge.data_dir, BIG)
    ran = edge_cli(edge, "scrub", "run", "--wait")
    assert ran.returncode == 1 and "1 blob(s) quarantined" in ran.stderr, ran.stderr
    assert f"quarantined {sha256(BIG)}" in ran.stdout and target("app.bin") in ran.stdout

    (blob,) = scrub_status(edge.url, edge.admin_token)["quarantined"]
    assert blob["sha256"] == sha256(BIG) and blob["paths"] == [target("app.bin")]
    assert "sha256 mismatch" in blob["reason"]
    kept = Path(blob["location"])
    assert kept.is_relative_to(edge.data_dir) and kept.read_bytes() != BIG and len(kept.read_bytes()) == len(BIG)

    status, message = refused(edge.url, target("app.bin"))
    assert status == 409 and "quarantined" in message and target("app.bin") in message
    assert http("HEAD", f"{edge.url}/artifactory/{target('app.bin')}")[0] == 409
    assert download(edge.url, target("notes.txt")) == (200, SMALL), "the other files are served as before"

    _, audit = http("GET", edge.url + "/artifactory/api/audit?action=quarantine", edge.admin_token)
    (record,) = audit["records"]
    assert (record["repo"], record["path"], record["status"]) == (SOURCE_REPO, "app/1.0/app.bin", 409)
    assert sha256(BIG) in record["deniedBy"]
    assert metric(edge.url, 'edge_scrub_quarantined_total{reason="mismatch"}') == 1
    assert metric(edge.url, "edge_quarantined_blobs") == 1
    assert metric(edge.url, "edge_scrub_passes_total") == 1
    assert metric(edge.url, "edge_scrub_blobs_total") == 2

    repaired = service_cli(service, "repair", "app", "1.0", "--wait", "--json")
    assert repaired.returncode == 0, repaired.stderr
    (site,) = json.loads(repaired.stdout)["sites"]
    assert site["status"] == "Completed" and (site["sent_files"], site["sent_bytes"]) == (1, len(BIG)), site
    assert download(edge.url, target("app.bin")) == (200, BIG)
    assert scrub_status(edge.url, edge.admin_token)["quarantined"] == []
    assert metric(edge.url, "edge_quarantined_blobs") == 0


def test_a_small_file_whose_bytes_changed_is_caught_by_its_download_and_the_next_distribution_restores_it(
    service: Service, edge: EdgeProcess
) -> None:
    distributed(service, edge)
    flip_a_byte(edge.data_dir, SMALL)
    status, message = refused(edge.url, target("notes.txt"))
    assert status == 409 and "sha256 mismatch found when served" in message
    assert [b["sha256"] for b in scrub_status(edge.url, edge.admin_token)["quarantined"]] == [sha256(SMALL)]
    assert metric(edge.url, 'edge_scrub_quarantined_total{reason="mismatch"}') == 1
    done = service.wait("1.0", service.distribute("1.0"))
    assert done["status"] == "Completed", done
    (site,) = done["sites"]
    assert (site["sent_files"], site["sent_bytes"]) == (1, len(SMALL))
    assert download(edge.url, target("notes.txt")) == (200, SMALL)


def test_repair_goes_only_to_the_edges_that_hold_the_bundle(service: Service, edge: EdgeProcess) -> None:
    trust(edge, public_key(service))
    service.add_edge("us-east-1", edge.url, distributor_token(edge))
    service.signed_bundle("1.0", FILES)
    nowhere = service.call("POST", "/distribution/api/v1/distribution/app/1.0/repair", {})
    assert nowhere[0] == 409 and "No registered edge holds app/1.0" in nowhere[1]["message"], nowhere
    assert service.wait("1.0", service.distribute("1.0"))["status"] == "Completed"
    dry = service_cli(service, "repair", "app", "1.0", "--dry-run")
    assert dry.returncode == 0 and "would go to us-east-1" in dry.stdout, dry.stderr
    bad = service.call("POST", "/distribution/api/v1/distribution/app/1.0/repair", {"dry_run": "yes"})
    assert bad[0] == 400, bad
    done = service_cli(service, "repair", "app", "1.0", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    (site,) = json.loads(done.stdout)["sites"]
    assert site["status"] == "Completed" and site["sent_files"] == 0, "an edge lacking nothing is sent nothing"


def test_a_flipped_byte_in_the_services_store_is_quarantined_and_a_deploy_of_the_same_bytes_restores_it(
    service: Service,
) -> None:
    service.put_file("app/1.0/app.bin", BIG)
    flip_a_byte(service.process.data_dir, BIG)
    ran = service_cli(service, "scrub", "run", "--wait", "--json")
    assert ran.returncode == 1, ran.stderr
    (blob,) = json.loads(ran.stdout)["quarantined"]
    assert blob["paths"] == [target("app.bin")]
    token = service.process.admin_token
    status, body = http("GET", f"{service.process.url}/artifactory/{target('app.bin')}", token)
    assert status == 409 and "quarantined" in body["errors"][0]["message"], body
    assert metric(service.process.url, 'distribution_scrub_quarantined_total{reason="mismatch"}') == 1
    service.put_file("app/1.0/app.bin", BIG)
    assert scrub_status(service.process.url, token)["quarantined"] == []
    assert service_cli(service, "scrub", "run", "--wait").returncode == 0


def test_background_passes_find_rotten_and_lost_blobs_by_themselves(tmp_path: Path, service: Service) -> None:
    env = {"EDGE_SCRUB_ENABLED": "true", "EDGE_SCRUB_INTERVAL": "1", "EDGE_SCRUB_RATE": str(1024**3)}
    edge = EdgeProcess(tmp_path / "edge", env=env).start()
    try:
        distributed(service, edge)
        flip_a_byte(edge.data_dir, BIG)
        (lost,) = (edge.data_dir / "blobs" / "blobs").rglob(sha256(SMALL))
        lost.unlink()
        deadline = time.monotonic() + 60
        while len(found := scrub_status(edge.url, edge.admin_token)["quarantined"]) < 2:
            if time.monotonic() >= deadline:  # a hang guard, not a speed check
                pytest.fail(f"the background scrub found {found}")
            time.sleep(0.2)
        by_sha = {b["sha256"]: b for b in found}
        assert by_sha[sha256(SMALL)]["reason"] == "missing from the blob store"
        assert by_sha[sha256(SMALL)]["location"] is None
        assert "sha256 mismatch" in by_sha[sha256(BIG)]["reason"]
        assert metric(edge.url, 'edge_scrub_quarantined_total{reason="missing"}') == 1
        assert refused(edge.url, target("notes.txt"))[0] == 409
        assert service_cli(service, "repair", "app", "1.0", "--wait").returncode == 0
        assert download(edge.url, target("notes.txt")) == (200, SMALL)
        assert download(edge.url, target("app.bin")) == (200, BIG)
    finally:
        assert edge.stop() == 0, edge.log_tail()
