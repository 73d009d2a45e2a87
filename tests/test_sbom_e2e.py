"""SBOMs end to end: the service and an edge as real processes. A bundle's SBOM reaches the edge in
the distribution and verifies there with plain tools against the signed manifest; one tampered
with on the way is refused and nothing of the bundle is kept; a bundle made before SBOMs existed
still distributes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, flip_byte, proxy_app
from tests.sbom_verify import Endpoint, verify_sbom_with_plain_tools
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, public_key, running_service
from tests.test_distribution_cli import Cli
from tests.test_sbom_build import embedded_sbom

FILES = {
    "app-1.4.0.tar.gz": b"\x1f\x8b pretend tarball\n" * 100,
    "ünïcødé notes #1?.md": b"# notes\n",
    "app.cdx.json": embedded_sbom(),
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeProcess]:
    started = EdgeProcess(tmp_path / "edge").start()
    try:
        yield started
    finally:
        started.stop()


def signed_bundle(service: Service, version: str, sign: bool = True) -> None:
    """The files (names quoted in their URLs, as curl users must), then the bundle of them."""
    for path, data in FILES.items():
        service.put_file(f"app/{version}/{quote(path)}", data)
    spec = {"queries": [{"pattern": f"{SOURCE_REPO}/app/{version}/*"}]}
    body = {"name": "app", "version": version, "spec": spec, "sign_immediately": sign}
    status, answer = service.call("POST", f"{V1}/release_bundle", body)
    assert status == 201, answer


def served(edge: EdgeProcess, version: str, path: str) -> tuple[int, bytes]:
    return download(edge.url, f"{SOURCE_REPO}/app/{version}/{quote(path)}")


def register(service: Service, edge: EdgeProcess, url: str | None = None) -> None:
    trust(edge, public_key(service))
    service.add_edge("edge-1", url or edge.url, distributor_token(edge))


def sbom_from_service(service: Service, version: str) -> bytes:
    status, data = http(
        "GET", f"{service.process.url}{V1}/release_bundle/app/{version}/sbom", service.process.admin_token
    )
    assert status == 200, data
    return data.encode() if isinstance(data, str) else json.dumps(data).encode()


def test_the_sbom_reaches_the_edge_and_verifies_with_plain_tools_against_the_signed_manifest(
    service: Service, edge: EdgeProcess, tmp_path: Path
) -> None:
    register(service, edge)
    signed_bundle(service, "1.4.0")
    done = service.wait("1.4.0", service.distribute("1.4.0"))
    assert done["status"] == "Completed", done
    verified = verify_sbom_with_plain_tools(
        tmp_path / "check",
        Endpoint(service.process.url, service.process.admin_token),
        Endpoint(edge.url, edge.admin_token),
        "app",
        "1.4.0",
    )
    status, keys = service.call("GET", f"{V1}/keys/gpg")
    for path, data in FILES.items():
        assert served(edge, "1.4.0", path) == (200, data)
    cli = Cli(service.process.url, service.process.admin_token)
    cli.ok("bundle", "sbom", "app", "1.4.0", "-o", str(tmp_path / "from-cli.json"))
    assert (tmp_path / "from-cli.json").read_bytes() == verified.data
    assert cli.ok("bundle", "sbom", "app", "1.4.0") == verified.data.decode()
    assert cli.fails("bundle", "sbom", "app", "9.9") == "Error: 404: Release bundle app/9.9 not found"
    assert status == 200 and verified.signer == next(k["fingerprint"] for k in keys["keys"] if k["default"])
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(verified.data.decode()) is None
    doc = json.loads(verified.data)
    names = {c["name"]: c for c in doc["components"]}
    assert set(names) == {f"{SOURCE_REPO}/app/1.4.0/{path}" for path in FILES}
    assert (
        "%C3%BCn%C3%AFc%C3%B8d%C3%A9%20notes%20%231%3F.md"
        in names[f"{SOURCE_REPO}/app/1.4.0/ünïcødé notes #1?.md"]["purl"]
    )
    assert sorted(c["name"] for c in names[f"{SOURCE_REPO}/app/1.4.0/app.cdx.json"]["components"]) == [
        "libbar",
        "libfoo",
        "service",
    ]


def test_an_sbom_tampered_with_on_the_way_is_refused_and_the_edge_keeps_nothing_of_the_bundle(
    service: Service, edge: EdgeProcess, tmp_path: Path
) -> None:
    signed_bundle(service, "1.4.0")
    sbom = sbom_from_service(service, "1.4.0")
    tampered = flip_byte(sbom, len(sbom) // 2)
    # every upload body that carries the SBOM's bytes carries them changed by one bit
    faults = Faults(only="/transactions/", damage_bodies=10_000, damage=lambda body: body.replace(sbom, tampered))
    proxy = ThreadedServer(proxy_app(edge.url, faults)).start()
    try:
        register(service, edge, proxy.url)
        done = service.wait("1.4.0", service.distribute("1.4.0"))
    finally:
        proxy.stop()
    assert done["status"] == "Failed", done
    assert any(status == 422 for _, _, status in faults.seen), faults.seen
    status, bundles = http("GET", f"{edge.url}/artifactory/api/distribution/bundles", edge.admin_token)
    assert status == 200 and bundles == []
    for path in FILES:
        assert served(edge, "1.4.0", path)[0] == 404
    sbom_sha256 = hashlib.sha256(sbom).hexdigest()
    assert not [p for p in edge.data_dir.rglob("*") if sbom_sha256 in p.name]
    status, _ = http("GET", f"{edge.url}/artifactory/api/distribution/release_bundle/app/1.4.0/sbom", edge.admin_token)
    assert status == 404


def test_a_bundle_made_before_sboms_existed_still_distributes_and_its_sbom_is_a_404(
    service: Service, edge: EdgeProcess
) -> None:
    register(service, edge)
    signed_bundle(service, "1.3.0", sign=False)
    with sqlite3.connect(service.process.data_dir / "catalog.db", timeout=30) as db:  # as stored before SBOMs
        db.execute("DELETE FROM bundle_sboms WHERE name = 'app' AND version = '1.3.0'")
    status, body = service.call("POST", f"{V1}/release_bundle/app/1.3.0/sign", {})
    assert status == 200, body
    _, manifest = service.call("GET", f"{V1}/release_bundle/app/1.3.0/manifest")
    assert "sbom" not in manifest
    done = service.wait("1.3.0", service.distribute("1.3.0"))
    assert done["status"] == "Completed", done
    for path, data in FILES.items():
        assert served(edge, "1.3.0", path) == (200, data)
    status, answer = http(
        "GET", f"{edge.url}/artifactory/api/distribution/release_bundle/app/1.3.0/sbom", edge.admin_token
    )
    assert status == 404 and answer["errors"][0]["status"] == 404, answer
