"""Metrics at /metrics, readiness, and request ids, on both services.

In-process apps for the counters and their labels; real ``edge serve`` and ``distribution
serve`` processes for what an operator sees: the scrape, readiness turning 503 when the
storage goes, and the request id in the response and in the JSON log lines.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import DistributionProcess, EdgeProcess
from distribution.app import create_app as create_distribution
from distribution.jobs import COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE
from distribution.settings import DistributionSettings
from edge.access.rules import RuleSpec
from edge.app import create_app
from edge.settings import AccessSettings
from repository.http import system
from repository.http.metrics import METHODS, UNMATCHED
from repository.http.setup import database
from repository.logs import JsonFormatter, RequestIdFilter
from storage_backends import StorageBackend, StorageError, create_backend
from tests.conftest import ADMIN_TOKEN, UPLOADS, admin, backend_params, make_settings, upload
from tests.edge_setup import cut_off_download
from tests.test_audit import put, records, wait_for
from tests.test_distribution_jobs import REPO, distribute, register, signed_bundle, status_of, trusted_edge

READINESS = "/artifactory/api/system/readiness"
V1 = "/distribution/api/v1"
WAIT = 30.0  # a hang guard, never a speed check
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for n, key in samples if n == name}


async def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return parse(await resp.text())


async def scrape_until(client: Any, done: Callable[[Samples], bool], headers: dict[str, str] | None = None) -> Samples:
    """A request is counted once its last byte is out, which can be a moment after the client read it."""
    deadline = time.monotonic() + WAIT
    while True:
        samples = await scrape(client, headers)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"metrics never showed what was expected: {sorted(samples.items(), key=str)[:60]}")
        await asyncio.sleep(0.05)


def requests_of(samples: Samples, method: str, route: str, status: int) -> float:
    return value(samples, "http_requests_total", method=method, route=route, status=str(status)) or 0.0


# ---------------------------------------------------------------- an edge, in process


async def test_an_edge_counts_requests_by_route_and_status_the_bytes_it_served_and_refusals_by_rule(
    edge: Any,
) -> None:
    data = b"x" * 200_000
    await upload(edge, "m/app.bin", data)
    assert (await edge.get(f"/artifactory/{UPLOADS}/m/app.bin")).status == 200
    part = await edge.get(f"/artifactory/{UPLOADS}/m/app.bin", headers={"Range": "bytes=0-999"})
    assert part.status == 206 and len(await part.read()) == 1000
    assert (await edge.put(f"/artifactory/{UPLOADS}/m/anon.bin", data=b"a")).status == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await edge.get(f"/artifactory/{UPLOADS}/m/app.bin", headers=bad)).status == 401
    assert (await edge.put("/artifactory/releases-local/m/app.bin", data=b"a", headers=admin())).status == 403

    samples = await scrape_until(edge, lambda s: requests_of(s, "PUT", "deploy", 403) == 1)
    assert requests_of(samples, "PUT", "deploy", 201) == 1
    assert requests_of(samples, "GET", "download", 200) == 1
    assert requests_of(samples, "GET", "download", 206) == 1
    assert requests_of(samples, "PUT", "deploy", 401) == 1
    assert requests_of(samples, "GET", "download", 401) == 1
    served = value(samples, "http_response_body_bytes_total", route="download")
    assert served is not None and len(data) + 1000 <= served < len(data) + 1000 + 1000  # the 401's error body too
    # the histogram's _count is how many downloads it observed (three), not a time
    assert value(samples, "http_request_duration_seconds_count", route="download") == 3
    kinds = ("authentication", "credentials", "policy", "ip-deny")
    denials = {rule: value(samples, "edge_access_denials_total", rule=rule) for rule in kinds}
    assert denials == {"authentication": 1, "credentials": 1, "policy": 1, "ip-deny": 0}
    assert value(samples, "edge_transactions", state="OPEN") == 0
    assert value(samples, "edge_transactions", state="COMMITTED") == 0


async def test_a_refusal_by_an_ip_rule_is_counted_under_the_rules_kind_not_its_text(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    rule = RuleSpec(repos=("releases-*",), deny_cidrs=("127.0.0.0/8",))
    client = await aiohttp_client(create_app(make_settings(tmp_path, access=AccessSettings(rules=(rule,)))))
    assert (await client.get("/artifactory/releases-local/app.bin")).status == 403
    samples = await scrape_until(client, lambda s: value(s, "edge_access_denials_total", rule="ip-deny") == 1)
    assert label_values(samples, "edge_access_denials_total", "rule") == {
        "ip-deny", "ip-allow", "ip-unknown", "geo-deny", "geo-allow", "geo-unknown", "signed-url",
        "authentication", "credentials", "permission", "policy",
    }  # fmt: skip


async def test_labels_stay_bounded_whatever_paths_and_methods_clients_send(edge: Any) -> None:
    await scrape(edge)
    before = await scrape(edge)
    for i in range(100):
        await edge.get(f"/unknown/{uuid.uuid4().hex}/{i}")
        await edge.get(f"/artifactory/api/no-such-call-{i}")
        await edge.get(f"/artifactory/{UPLOADS}/missing/{i}.bin")
    for i in range(20):
        await edge.request(f"FROB{i}", f"/artifactory/{UPLOADS}/x{i}")
    samples = await scrape_until(edge, lambda s: requests_of(s, "GET", UNMATCHED, 404) == 100)
    assert requests_of(samples, "GET", "api_not_found", 404) == 100
    assert requests_of(samples, "GET", "download", 404) == 100
    new = {key for key in samples if key[0] == "http_requests_total"} - set(before)
    assert {(dict(labels)["method"], dict(labels)["route"]) for _, labels in new} <= {
        ("GET", UNMATCHED), ("GET", "api_not_found"), ("GET", "download"), ("GET", "metrics"),
        ("other", "other_method"),
    }  # fmt: skip
    assert label_values(samples, "http_requests_total", "method") <= METHODS | {"other"}
    routes = label_values(samples, "http_request_duration_seconds_count", "route")
    assert routes <= {r.name for r in edge.app.router.routes() if r.name} | {UNMATCHED}


async def test_metrics_can_be_kept_for_admins(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, metrics_public=False)))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong-token"})).status == 401
    await scrape_until(client, lambda s: requests_of(s, "GET", "metrics", 401) == 2, headers=admin())


# ---------------------------------------------------------------- readiness, in process


async def test_readiness_answers_ready_then_503_naming_the_storage_once_its_folder_is_gone(
    edge: Any, tmp_path: Path
) -> None:
    resp = await edge.get(READINESS)
    assert resp.status == 200
    assert await resp.json() == {"status": "READY", "checks": {"database": "OK", "storage": "OK"}}
    shutil.rmtree(tmp_path / "edge" / "blobs")
    resp = await edge.get(READINESS)
    assert resp.status == 503
    assert await resp.json() == {"status": "NOT_READY", "checks": {"database": "OK", "storage": "FAILED"}}
    assert (await edge.get("/artifactory/api/system/ping")).status == 200  # alive, not ready


async def test_readiness_is_503_while_the_database_thread_does_not_answer(
    edge: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(system, "READINESS_TIMEOUT", 0.2)
    caplog.handler.addFilter(RequestIdFilter())
    release = threading.Event()
    stuck = asyncio.ensure_future(edge.app[database].run(release.wait, WAIT))
    try:
        resp = await edge.get(READINESS, headers={"X-Request-ID": "probe-1"})
        assert resp.status == 503
        assert (await resp.json())["checks"] == {"database": "TIMEOUT", "storage": "OK"}
    finally:
        release.set()
        await stuck
    assert (await edge.get(READINESS)).status == 200
    (warning,) = [r for r in caplog.records if "readiness" in r.getMessage()]
    assert getattr(warning, "request_id", None) == "probe-1"
    assert json.loads(JsonFormatter().format(warning))["request_id"] == "probe-1"


async def test_an_s3_edge_is_not_ready_once_its_bucket_is_gone_and_redirects_carry_the_request_id(
    aiohttp_client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    params = backend_params("s3", tmp_path, request)
    bucket = "readiness-" + uuid.uuid4().hex[:12]
    s3 = boto3.client(
        "s3",
        endpoint_url=params["endpoint_url"],
        region_name=params["region"],
        aws_access_key_id=params["access_key_id"],
        aws_secret_access_key=params["secret_access_key"],
    )
    s3.create_bucket(Bucket=bucket)
    try:
        settings = make_settings(tmp_path, storage={"backend": "s3", **params, "bucket": bucket})
        client = await aiohttp_client(create_app(settings))
        assert (await client.get(READINESS)).status == 200
        await upload(client, "r/f.bin", b"bytes in s3")
        resp = await client.get(f"/artifactory/{UPLOADS}/r/f.bin", allow_redirects=False)
        assert resp.status == 302 and len(resp.headers["X-Request-ID"]) == 32
        await scrape_until(client, lambda s: requests_of(s, "GET", "download", 302) == 1)
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
        s3.close()
    resp = await client.get(READINESS)
    assert resp.status == 503 and (await resp.json())["checks"] == {"database": "OK", "storage": "FAILED"}


async def test_every_backend_passes_its_readiness_check_and_a_local_one_without_its_folder_fails(
    backend: StorageBackend, tmp_path: Path
) -> None:
    await backend.check()
    local = create_backend("local", {"root": str(tmp_path / "gone")})
    await local.open()
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(StorageError):
        await local.check()
    await local.close()


# ---------------------------------------------------------------- request ids, in process


async def test_a_sane_request_id_is_answered_back_and_anything_else_is_replaced(edge: Any) -> None:
    resp = await edge.get("/artifactory/api/system/ping", headers={"X-Request-ID": "abc-123_x.y:z"})
    assert resp.headers["X-Request-ID"] == "abc-123_x.y:z"
    for bad in ("a" * 129, "has space", "semi;colon", "ünï", ""):
        resp = await edge.get("/artifactory/api/system/ping", headers={"X-Request-ID": bad})
        answered = resp.headers["X-Request-ID"]
        assert answered != bad and len(answered) == 32 and int(answered, 16) >= 0
    ids = set()
    for path in ("/nowhere", f"/artifactory/{UPLOADS}/missing.bin", "/artifactory/api/audit"):
        resp = await edge.get(path)
        assert resp.status in (401, 404)
        ids.add(resp.headers["X-Request-ID"])
    resp = await edge.put(f"/artifactory/{UPLOADS}/f.bin", data=b"f", headers={"X-Request-ID": "up-1"})
    assert resp.status == 401 and resp.headers["X-Request-ID"] == "up-1"
    assert len(ids) == 3


# ---------------------------------------------------------------- the Distribution service


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,), retry_backoff_cap=0.5
    )
    return await aiohttp_client(create_distribution(settings))


async def test_the_distribution_service_counts_its_requests_and_answers_request_ids_and_readiness(dist: Any) -> None:
    refused = await dist.get(f"{V1}/release_bundle")
    assert refused.status == 401 and len(refused.headers["X-Request-ID"]) == 32
    listed = await dist.get(f"{V1}/release_bundle", headers={**admin(), "X-Request-ID": "list-1"})
    assert listed.status == 200 and listed.headers["X-Request-ID"] == "list-1"
    body = await listed.read()
    ready = await dist.get(READINESS)
    assert ready.status == 200 and (await ready.json())["status"] == "READY"
    samples = await scrape_until(dist, lambda s: requests_of(s, "GET", "readiness", 200) == 1)
    assert requests_of(samples, "GET", "bundle_list", 401) == 1
    assert requests_of(samples, "GET", "bundle_list", 200) == 1
    served = value(samples, "http_response_body_bytes_total", route="bundle_list")
    assert served is not None and served > len(body)
    assert {state: value(samples, "distribution_jobs", state=state) for state in (IN_QUEUE, IN_PROGRESS)} == {
        IN_QUEUE: 0,
        IN_PROGRESS: 0,
    }


async def test_jobs_by_state_bytes_and_lag_per_edge_follow_a_real_distribution(
    dist: Any, edge_server: EdgeProcess
) -> None:
    files = {"app.tar.gz": b"\x1f\x8b" + b"m" * 300_000, "README.md": b"# app\n"}
    await trusted_edge(dist, edge_server)
    await register(dist, name="eu-west-1", url="http://127.0.0.1:1")  # nobody listens there
    await signed_bundle(dist, "1.0", files)
    dist_id = await distribute(dist, "1.0")
    deadline = time.monotonic() + 60
    while True:
        sites = {s["target_artifactory"]["name"]: s for s in (await status_of(dist, "1.0", dist_id))["sites"]}
        if sites["us-east-1"]["status"] in (COMPLETED, FAILED) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert sites["us-east-1"]["status"] == COMPLETED, sites

    def per_state(samples: Samples) -> dict[str, float | None]:
        return {state: value(samples, "distribution_jobs", state=state) for state in (IN_QUEUE, COMPLETED, FAILED)}

    samples = await scrape_until(dist, lambda s: per_state(s) == {IN_QUEUE: 1, COMPLETED: 1, FAILED: 0})
    sbom = json.loads(await (await dist.get(f"{V1}/release_bundle/app/1.0/manifest", headers=admin())).read())["sbom"]
    sent = sum(map(len, files.values())) + sbom["size"]  # the files and the bundle's SBOM
    assert value(samples, "distribution_sent_bytes_total", edge="us-east-1") == sent
    assert value(samples, "distribution_sent_bytes_total", edge="eu-west-1") is None
    assert value(samples, "distribution_edge_pending_jobs", edge="us-east-1") == 0
    assert value(samples, "distribution_edge_pending_jobs", edge="eu-west-1") == 1
    # lag is 0 by definition for an edge with nothing unfinished, not a measured time
    assert value(samples, "distribution_edge_lag_seconds", edge="us-east-1") == 0
    lag = value(samples, "distribution_edge_lag_seconds", edge="eu-west-1")
    assert lag is not None and lag >= 0

    assert (await dist.put(f"{V1}/distribution/app/1.0/abort", headers=admin())).status == 202
    samples = await scrape(dist)
    assert per_state(samples) == {IN_QUEUE: 0, COMPLETED: 1, FAILED: 1}
    assert value(samples, "distribution_edge_pending_jobs", edge="eu-west-1") == 0
    # nothing is unfinished for it after the abort: its lag is 0 by definition, not a measured time
    assert value(samples, "distribution_edge_lag_seconds", edge="eu-west-1") == 0

    edge_samples = parse(get(edge_server.url + "/metrics")[2])
    assert value(edge_samples, "edge_transactions", state="COMMITTED") == 1
    assert value(edge_samples, "edge_transactions", state="OPEN") == 0
    assert (value(edge_samples, "http_requests_total", method="POST", route="tx_commit", status="200") or 0) >= 1


# ---------------------------------------------------------------- real processes


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _DIRECT.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def log_lines(process: EdgeProcess, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The JSON log lines naming ``request_id``: the access line is written once the answer is out."""
    deadline = time.monotonic() + WAIT
    while True:
        found = []
        for line in process.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("request_id") == request_id:
                    found.append(entry)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_real_edge_answers_request_ids_logs_them_and_turns_unready_without_its_storage(
    edge_server: EdgeProcess,
) -> None:
    status, headers, _ = get(edge_server.url + "/artifactory/api/system/ping", {"X-Request-ID": "e2e-ping-1"})
    assert status == 200 and headers["X-Request-ID"] == "e2e-ping-1"
    (line,) = log_lines(edge_server, "e2e-ping-1")
    assert line["logger"] == "aiohttp.access" and line["status"] == 200

    status, headers, _ = get(f"{edge_server.url}/artifactory/{UPLOADS}/nothing.bin")
    generated = headers["X-Request-ID"]
    assert status == 404 and len(generated) == 32
    (line,) = log_lines(edge_server, generated)
    assert line["path"] == f"/artifactory/{UPLOADS}/nothing.bin" and line["status"] == 404

    status, _, body = get(edge_server.url + READINESS)
    assert status == 200 and json.loads(body)["status"] == "READY"
    shutil.rmtree(edge_server.data_dir / "blobs")
    status, _, body = get(edge_server.url + READINESS, {"X-Request-ID": "e2e-ready-2"})
    assert status == 503 and json.loads(body)["checks"]["storage"] == "FAILED"
    lines = log_lines(edge_server, "e2e-ready-2", count=2)
    assert {entry["logger"] for entry in lines} == {"repository.http.system", "aiohttp.access"}
    warning = next(entry for entry in lines if entry["logger"] == "repository.http.system")
    assert warning["level"] == "warning" and "storage" in warning["msg"]

    status, headers, text = get(edge_server.url + "/metrics")
    samples = parse(text)
    assert status == 200
    assert requests_of(samples, "GET", "readiness", 503) == 1
    assert requests_of(samples, "GET", "download", 404) == 1
    assert requests_of(samples, "GET", "ping", 200) >= 1


def test_a_download_cut_off_part_way_counts_the_bytes_the_audit_trail_records(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024  # more than loopback socket buffers hold
    with EdgeProcess(tmp_path / "edge") as edge:
        put(edge, "big.bin", os.urandom(size))
        cut_off_download(edge, f"{UPLOADS}/big.bin")
        (record,) = wait_for("the cut-off download", lambda: records(edge, action="download"))
        assert record["aborted"] is True and 0 < record["bytes"] < size
        samples = parse(get(edge.url + "/metrics")[2])
        assert requests_of(samples, "GET", "download", 200) == 1
        assert value(samples, "http_response_body_bytes_total", route="download") == record["bytes"]
    assert edge.returncode == 0


def test_a_real_distribution_service_serves_metrics_readiness_and_request_ids(tmp_path: Path) -> None:
    service = DistributionProcess(tmp_path / "dist")
    service.start()
    try:
        status, headers, body = get(service.url + READINESS, {"X-Request-ID": "dist-ready-1"})
        assert status == 200 and json.loads(body)["status"] == "READY"
        assert headers["X-Request-ID"] == "dist-ready-1"
        (line,) = log_lines(service, "dist-ready-1")
        assert line["status"] == 200 and line["path"] == READINESS
        status, _, text = get(service.url + "/metrics")
        samples = parse(text)
        assert status == 200 and requests_of(samples, "GET", "readiness", 200) == 1
        assert value(samples, "distribution_jobs", state=COMPLETED) == 0
    finally:
        code = service.stop()
    assert code == 0, service.log_tail()


def test_json_log_lines_carry_the_request_id_only_inside_a_request() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", None, None)
    RequestIdFilter().filter(record)
    assert "request_id" not in json.loads(JsonFormatter().format(record))


async def test_access_lines_written_directly_read_as_logging_would_write_them_once_the_batch_is_due() -> None:
    written, logged = await _access_lines_both_ways("/artifactory/r/a%20b.bin", "rid-1")
    assert written == logged
    assert written["msg"] == "GET /artifactory/r/a b.bin 200" and written["request_id"] == "rid-1"


@pytest.mark.parametrize(
    "raw_path",
    ["/artifactory/r/%22q%22%5Cb.bin", "/artifactory/r/%01%1f%7f.bin", "/artifactory/r/caf%C3%A9-%E2%9C%93.bin"],
    ids=["quote-backslash", "control-characters", "non-ascii"],
)
async def test_access_lines_written_directly_encode_every_character_as_logging_would(raw_path: str) -> None:
    written, logged = await _access_lines_both_ways(raw_path, None)
    assert written == logged
    assert written["path"] == urllib.parse.unquote(raw_path) and "request_id" not in written


async def _access_lines_both_ways(raw_path: str, request_id: str | None) -> tuple[dict[str, object], dict[str, object]]:
    """The same access logged by the direct writer, then through ``logging``; both parsed, ``ts`` apart."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from repository.http import keys
    from repository.logs import JsonAccessLogger, JsonHandler

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    direct, plain = JsonHandler(), logging.StreamHandler(io.StringIO())
    direct.setStream(io.StringIO())
    plain.setFormatter(JsonFormatter())
    request = make_mocked_request("GET", raw_path)
    if request_id is not None:
        request[keys.request_id] = request_id
    response = web.Response(body=b"x" * 10)
    access = JsonAccessLogger(logging.getLogger("aiohttp.access"), "")
    try:
        root.setLevel(logging.INFO)
        root.handlers[:] = [direct]
        access.log(request, response, 0.0123)
        assert direct.stream.getvalue() == "", "written together with the others of a moment"
        for _ in range(500):  # bounded: the batching delay is far shorter than 500 turns of 10 ms
            if direct.stream.getvalue():
                break
            await asyncio.sleep(0.01)
        root.handlers[:] = [plain]
        access.log(request, response, 0.0123)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    written, logged = json.loads(direct.stream.getvalue()), json.loads(plain.stream.getvalue())
    assert written.pop("ts")[:4] == logged.pop("ts")[:4]
    return written, logged
