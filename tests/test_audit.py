"""The audit trail: every decision and download recorded (who, from where, what, the answer, the
bytes), written within a second and on shutdown, queryable, exportable, pruned; and the download
statistics kept from it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy
import sqlite_utils

from devstack.services import EdgeProcess
from edge.access import audit_step
from edge.access.audit import AuditRecord, AuditTrail
from edge.access.audit_store import AuditQuery, AuditStore
from edge.access.rules import RuleSpec
from edge.app import create_app
from edge.keys import audit_trail_key
from edge.schema import edge_migrations
from edge.settings import AccessSettings, AuditSettings
from repository.db import Database
from repository.schema import catalog_migrations
from repository.sql import ROWS_PER_INSERT
from tests.conftest import UPLOADS, admin, error_of, make_settings, upload
from tests.edge_setup import cut_off_download, http

AUDIT = "/artifactory/api/audit"
DAY_MS = 24 * 3600 * 1000
WAIT = 30.0  # a hang guard, not a speed check
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """Poll until ``check()`` answers something truthy; a hang fails the test."""
    deadline = time.monotonic() + WAIT
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def records(edge: EdgeProcess, **params: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, body = http("GET", f"{edge.url}{AUDIT}?{query}", edge.admin_token)
    assert status == 200, body
    return list(body["records"])


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with _DIRECT.open(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def put(edge: EdgeProcess, path: str, data: bytes) -> None:
    request = urllib.request.Request(f"{edge.artifactory_url}/{UPLOADS}/{path}", data=data, method="PUT")
    request.add_header("Authorization", f"Bearer {edge.admin_token}")
    with _DIRECT.open(request, timeout=60) as resp:
        assert resp.status == 201


def edge_cli(edge: EdgeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "edge"), *args, "--url", edge.url, "--token", edge.admin_token]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})


# -- against a real `edge serve` ----------------------------------------------------------


def test_a_download_and_a_deploy_are_recorded_with_who_where_what_and_bytes(edge_server: EdgeProcess) -> None:
    data = os.urandom(200_000)  # above the in-memory size: goes out by sendfile
    put(edge_server, "rel/app.bin", data)
    assert fetch(f"{edge_server.artifactory_url}/{UPLOADS}/rel/app.bin") == (200, data)
    found = wait_for("the download record", lambda: records(edge_server, action="download"))
    (download,) = found
    assert download["subject"] == "anonymous" and download["tokenId"] is None
    assert download["clientIp"] == "127.0.0.1"
    assert (download["method"], download["repo"], download["path"]) == ("GET", UPLOADS, "rel/app.bin")
    assert (download["status"], download["bytes"], download["aborted"]) == (200, len(data), False)
    assert download["deniedBy"] is None and download["signedUrl"] is None
    assert datetime.fromisoformat(download["time"].replace("Z", "+00:00")).tzinfo is not None
    (deploy,) = records(edge_server, action="deploy")
    assert (deploy["subject"], deploy["status"], deploy["path"]) == ("admin", 201, "rel/app.bin")
    assert deploy["bytes"] > 0  # the file-info answer


def test_a_denial_is_one_record_naming_the_rule_and_changes_nothing_else(tmp_path: Path) -> None:
    with EdgeProcess(tmp_path / "edge", env={"EDGE_UPLOADS_ANONYMOUS_READ": "false"}) as edge:
        put(edge, "secret.bin", b"secret")
        url = f"{edge.artifactory_url}/{UPLOADS}/secret.bin"
        assert fetch(url, {"Authorization": f"Bearer {edge.admin_token}"})[0] == 200
        wait_for("the admin's download", lambda: records(edge, action="download"))
        stats_before = http("GET", f"{edge.url}/artifactory/api/storage/{UPLOADS}/secret.bin?stats", edge.admin_token)
        status, body = fetch(url)
        assert status == 401 and json.loads(body)["errors"][0]["status"] == 401
        status, body = fetch(url, {"Authorization": "Bearer edt_wrong"})
        assert status == 401
        denied = wait_for("two denials", lambda: len(got := records(edge, action="denied")) == 2 and got)
        assert [d["deniedBy"] for d in denied] == ["Bad credentials", f"repo '{UPLOADS}' has anonymous read off"]
        assert all(d["action"] == "download" and d["bytes"] > 0 for d in denied)  # the error body
        assert len(records(edge, action="download")) == 3
        stats_after = http("GET", f"{edge.url}/artifactory/api/storage/{UPLOADS}/secret.bin?stats", edge.admin_token)
        assert stats_after == stats_before
        assert stats_after[1]["downloadCount"] == 1
    assert edge.returncode == 0


def test_records_still_queued_at_sigterm_are_written_before_exit(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", env={"EDGE_AUDIT_FLUSH_INTERVAL": "1"})
    with edge:
        put(edge, "f.bin", b"x" * 1000)
        for _ in range(20):
            assert fetch(f"{edge.artifactory_url}/{UPLOADS}/f.bin")[0] == 200
        edge.terminate()  # at once: most of these are still queued
        assert edge.wait(30) == 0
    with sqlite3.connect(edge.data_dir / "catalog.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM audit WHERE action = 'download' AND status = 200").fetchone()
        (stats,) = conn.execute("SELECT count FROM download_stats WHERE path = 'f.bin'").fetchone()
    assert count == 20 and stats == 20
    with edge:  # and a restarted node answers them
        assert len(records(edge, action="download", limit="100")) == 20


def test_an_aborted_download_is_recorded_with_the_bytes_that_went_out_and_not_counted(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024  # more than loopback socket buffers hold
    with EdgeProcess(tmp_path / "edge") as edge:
        put(edge, "big.bin", os.urandom(size))
        cut_off_download(edge, f"{UPLOADS}/big.bin")
        (record,) = wait_for("the aborted download", lambda: records(edge, action="download"))
        assert record["aborted"] is True and record["status"] == 200
        assert 0 < record["bytes"] < size
        status, stats = http("GET", f"{edge.url}/artifactory/api/storage/{UPLOADS}/big.bin?stats", edge.admin_token)
        assert status == 200 and stats["downloadCount"] == 0
    assert edge.returncode == 0


def test_the_edge_audit_command_filters_and_exports_json_lines(tmp_path: Path) -> None:
    with EdgeProcess(tmp_path / "edge") as edge:
        put(edge, "a/one.bin", b"1")
        put(edge, "b/two.bin", b"22")
        for path in ("a/one.bin", "b/two.bin", "a/one.bin"):
            fetch(f"{edge.artifactory_url}/{UPLOADS}/{path}")
        wait_for("three downloads", lambda: len(records(edge, action="download")) == 3)
        today = datetime.now(UTC).date().isoformat()
        out = edge_cli(edge, "audit", "--since", today, "--repo", UPLOADS, "--action", "download", "--format", "jsonl")
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [r["path"] for r in lines] == ["a/one.bin", "b/two.bin", "a/one.bin"]
        prefix = edge_cli(edge, "audit", "--path", "a/*", "--action", "download")
        assert [json.loads(line)["path"] for line in prefix.stdout.splitlines()] == ["a/one.bin", "a/one.bin"]
        one = edge_cli(edge, "audit", "--limit", "1", "--format", "text")
        assert one.returncode == 0 and len(one.stdout.splitlines()) == 1
        text = edge_cli(edge, "audit", "--action", "download", "--format", "text")
        assert "127.0.0.1" in text.stdout and f"{UPLOADS}/b/two.bin 200 2" in text.stdout
        bad = edge_cli(edge, "audit", "--since", "last tuesday")
        assert bad.returncode != 0 and "400" in bad.stderr and "since" in bad.stderr
    assert edge.returncode == 0


def test_retention_prunes_old_records_at_start(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", env={"EDGE_AUDIT_RETENTION_DAYS": "7"})
    with edge:
        put(edge, "f.bin", b"f")
    old = int(time.time() * 1000) - 8 * DAY_MS
    with sqlite3.connect(edge.data_dir / "catalog.db") as conn:
        row = "(?, 'old', 'GET', 'download', 200, 1)"
        sql = f"INSERT INTO audit (time, subject, method, action, status, bytes) VALUES {row}, {row}"
        conn.execute(sql, [old, old + DAY_MS])
    with edge:
        wait_for("old records to go", lambda: [r for r in records(edge) if r["subject"] == "old"] == [])
        assert [r["action"] for r in records(edge)] == ["deploy"]


# -- in process: the query API, statistics, bytes, and the writer ----------------------------


async def flush(client: Any) -> None:
    await client.app[audit_trail_key].flush()


async def settle(client: Any, count: int) -> None:
    """Flush until ``count`` records are written: a response can reach the client a moment
    before the server records it."""
    trail = client.app[audit_trail_key]
    deadline = time.monotonic() + WAIT
    while True:
        await trail.flush()
        if len(await trail.store.query(_all())) >= count:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {count} audit records were written")
        await asyncio.sleep(0.01)


async def query(client: Any, headers: dict[str, str] | None = None, **params: str) -> Any:
    resp = await client.get(AUDIT, params=params, headers=admin() if headers is None else headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_stats_count_whole_downloads_once_and_name_the_last_downloader(edge: Any) -> None:
    data = os.urandom(100_000)
    await upload(edge, "rel/app.bin", data)
    url = f"/artifactory/{UPLOADS}/rel/app.bin"
    stats_url = f"/artifactory/api/storage/{UPLOADS}/rel/app.bin?stats"
    zero = await (await edge.get(stats_url)).json()
    assert zero == {
        "uri": f"http://{edge.host}:{edge.port}/artifactory/api/storage/{UPLOADS}/rel/app.bin",
        "downloadCount": 0,
        "lastDownloaded": 0,
        "lastDownloadedBy": "",
        "remoteDownloadCount": 0,
        "remoteLastDownloaded": 0,
    }
    assert (await edge.get(url)).status == 200  # 1
    for first, last in ((0, 49_999), (50_000, 99_999)):  # a parallel download: counts once
        resp = await edge.get(url, headers={"Range": f"bytes={first}-{last}"})
        assert resp.status == 206
    assert (await edge.head(url)).status == 200  # not a download
    assert (await edge.get(url, headers={"Range": "bytes=0-9"})).status == 206  # not to the end
    resp = await edge.get(url, headers={**admin(), "Range": "bytes=99990-"})  # resumed to the end
    assert resp.status == 206
    await settle(edge, 8)
    stats = await (await edge.get(stats_url)).json()
    assert stats["downloadCount"] == 3 and stats["lastDownloadedBy"] == "admin"
    assert abs(stats["lastDownloaded"] - time.time() * 1000) < 3_600_000
    folder = await edge.get(f"/artifactory/api/storage/{UPLOADS}/rel?stats")
    assert (await error_of(folder))[0] == 400


async def test_requests_that_match_no_route_are_recorded_as_other_and_kept_in_no_memo(edge: Any) -> None:
    """Each request aiohttp finds no route for gets a route of its own: recording many of them
    leaves nothing behind per request (the per-route memo of actions holds only the app's routes)."""
    assert (await edge.get("/nowhere/0")).status == 404
    remembered = len(audit_step._route_actions)
    for i in range(1, 21):
        assert (await edge.get(f"/nowhere/{i}")).status == 404
    await settle(edge, 21)
    assert len(audit_step._route_actions) == remembered
    body = await query(edge, action="other")
    assert [(r["method"], r["status"]) for r in body["records"]] == [("GET", 404)] * 21


async def test_deleting_a_file_resets_its_statistics(edge: Any) -> None:
    await upload(edge, "d/x.bin", b"x")
    assert (await edge.get(f"/artifactory/{UPLOADS}/d/x.bin")).status == 200
    assert (await edge.delete(f"/artifactory/{UPLOADS}/d", headers=admin())).status == 204
    await upload(edge, "d/x.bin", b"x")
    await settle(edge, 4)
    stats = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/d/x.bin?stats")).json()
    assert stats["downloadCount"] == 0


async def test_bytes_are_the_body_bytes_sent_for_every_kind_of_response(edge: Any) -> None:
    small, large = os.urandom(1000), os.urandom(300_000)
    await upload(edge, "small.bin", small)
    await upload(edge, "large.bin", large)
    for name in ("small.bin", "large.bin"):
        assert (await edge.get(f"/artifactory/{UPLOADS}/{name}")).status == 200
    assert (await edge.get(f"/artifactory/{UPLOADS}/large.bin", headers={"Range": "bytes=10-19"})).status == 206
    assert (await edge.head(f"/artifactory/{UPLOADS}/large.bin")).status == 200
    etag = (await edge.head(f"/artifactory/{UPLOADS}/small.bin")).headers["ETag"]
    assert (await edge.get(f"/artifactory/{UPLOADS}/small.bin", headers={"If-None-Match": etag})).status == 304
    listing = await edge.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1")  # streamed by the handler
    listing_size = len(await listing.read())
    await settle(edge, 9)
    body = await query(edge, limit="7")
    got = [(r["method"], r["path"], r["status"], r["bytes"]) for r in reversed(body["records"])]
    assert got == [
        ("GET", "small.bin", 200, len(small)),
        ("GET", "large.bin", 200, len(large)),
        ("GET", "large.bin", 206, 10),
        ("HEAD", "large.bin", 200, 0),
        ("HEAD", "small.bin", 200, 0),
        ("GET", "small.bin", 304, 0),
        ("GET", None, 200, listing_size),
    ]


async def test_the_audit_api_filters_pages_newest_first_and_exports_json_lines(edge: Any) -> None:
    for i in range(12):
        await upload(edge, f"p/{i:02}.bin", b"%d" % i)
    for i in range(12):
        assert (await edge.get(f"/artifactory/{UPLOADS}/p/{i:02}.bin")).status == 200
    assert (await edge.get(f"/artifactory/{UPLOADS}/q/none.bin")).status == 404
    assert (await edge.put(f"/artifactory/{UPLOADS}/p/x.bin", data=b"x")).status == 401
    await settle(edge, 26)
    everything = (await query(edge, limit="1000"))["records"]
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) == 12 + 12 + 2
    pages, cursor = [], None
    while True:
        params = {"limit": "5", "action": "download"} | ({"cursor": cursor} if cursor else {})
        page = await query(edge, **params)
        pages += page["records"]
        cursor = page["next"]
        if cursor is None:
            break
    downloads = [r for r in everything if r["action"] == "download"]
    assert [r["id"] for r in pages] == [r["id"] for r in downloads] and len(downloads) == 13
    assert [r["path"] for r in (await query(edge, path="p/0*"))["records"] if r["action"] == "download"] == [
        f"p/{i:02}.bin" for i in reversed(range(10))
    ]
    assert [r["path"] for r in (await query(edge, path="p/03.bin", action="download"))["records"]] == ["p/03.bin"]
    (denied,) = (await query(edge, action="denied"))["records"]
    assert (denied["method"], denied["status"], denied["action"]) == ("PUT", 401, "deploy")
    assert denied["deniedBy"] == "anonymous may not write"
    assert len((await query(edge, subject="admin", limit="1000"))["records"]) == 12
    assert len((await query(edge, ip="127.0.0.1", limit="1000"))["records"]) == len(everything)
    assert len((await query(edge, ip="127.0.0.0/8", limit="1000"))["records"]) == len(everything)
    assert (await query(edge, ip="10.0.0.0/8"))["records"] == []
    middle = everything[10]["timeMillis"]
    newer = (await query(edge, since=str(middle), limit="1000"))["records"]
    older = (await query(edge, until=str(middle), limit="1000"))["records"]
    assert len(newer) + len(older) == len(everything) and all(r["timeMillis"] >= middle for r in newer)
    tomorrow = datetime.fromtimestamp(time.time() + 86400, UTC).date().isoformat()
    assert (await query(edge, since=tomorrow))["records"] == []
    today = datetime.now(UTC).date().isoformat()
    assert len((await query(edge, since=today, until=today, limit="1000"))["records"]) == len(everything)
    exported = await edge.get(AUDIT, params={"format": "jsonl"}, headers=admin())
    assert exported.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await exported.text()).splitlines()]
    assert lines == everything
    limited = await edge.get(AUDIT, params={"format": "jsonl", "limit": "3"}, headers=admin())
    assert len((await limited.text()).splitlines()) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"since": "last tuesday"},
        {"until": "2026-13-01"},
        {"limit": "0"},
        {"limit": "5000"},
        {"limit": "ten"},
        {"cursor": "-1"},
        {"action": "fly"},
        {"ip": "300.1.1.1"},
        {"path": "rel/a\x00.bin"},
        {"subject": "\x00"},
        {"format": "xml"},
        {"colour": "blue"},
    ],
)
async def test_a_bad_audit_query_is_a_400_naming_the_parameter(edge: Any, params: dict[str, str]) -> None:
    status, message = await error_of(await edge.get(AUDIT, params=params, headers=admin()))
    assert status == 400 and next(iter(params)) in message


async def test_the_audit_trail_is_for_admins_and_for_managers_of_a_repo(edge: Any) -> None:
    await edge.put("/artifactory/api/security/users/mona", json={"password": "mona-password"}, headers=admin())
    target = {"name": "m", "repo": {"repositories": [UPLOADS], "actions": {"users": {"mona": ["manage", "read"]}}}}
    await edge.put("/artifactory/api/v2/security/permissions/m", json=target, headers=admin())
    token = await (await edge.post("/access/api/v1/tokens", json={"role": "reader"}, headers=admin())).json()
    mona = {"Authorization": aiohttp.encode_basic_auth("mona", "mona-password")}
    assert (await error_of(await edge.get(AUDIT)))[0] == 401
    reader = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await error_of(await edge.get(AUDIT, headers=reader)))[0] == 403
    assert (await error_of(await edge.get(AUDIT, headers=mona)))[0] == 403  # repo is required
    assert (await error_of(await edge.get(AUDIT, params={"repo": "other"}, headers=mona)))[0] == 403
    await flush(edge)
    mine = await query(edge, mona, repo=UPLOADS)
    assert all(r["repo"] == UPLOADS for r in mine["records"])


async def test_with_audit_off_nothing_is_recorded_and_the_api_still_answers(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, audit=AuditSettings(enabled=False))))
    await upload(client, "f.bin", b"f")
    assert (await client.get(f"/artifactory/{UPLOADS}/f.bin")).status == 200
    await flush(client)
    assert (await query(client))["records"] == []
    stats = await (await client.get(f"/artifactory/api/storage/{UPLOADS}/f.bin?stats")).json()
    assert stats["downloadCount"] == 0


async def test_a_signed_url_download_is_recorded_with_its_key_id_and_issue_time(edge: Any) -> None:
    await upload(edge, "s/f.bin", b"signed")
    body = {"repo_path": f"/{UPLOADS}/s/f.bin", "valid_for_secs": 600}
    url = await (await edge.post("/artifactory/api/signed/url", json=body, headers=admin())).text()
    assert (await edge.get(url[url.index("/artifactory/") :])).status == 200
    await settle(edge, 3)
    (record,) = (await query(edge, action="download"))["records"]
    assert record["signedUrl"]["kid"] and isinstance(record["signedUrl"]["iat"], int)
    assert abs(record["signedUrl"]["iat"] - time.time()) < 3600
    assert record["subject"] == "edge" and record["bytes"] == len(b"signed")


async def test_a_refusal_by_an_ip_rule_is_recorded_with_the_rule(aiohttp_client: Any, tmp_path: Path) -> None:
    rule = RuleSpec(repos=("releases-*",), deny_cidrs=("127.0.0.0/8",))
    client = await aiohttp_client(create_app(make_settings(tmp_path, access=AccessSettings(rules=(rule,)))))
    resp = await client.get("/artifactory/releases-local/app.bin")
    assert (await error_of(resp))[0] == 403
    await settle(client, 1)
    (denied,) = (await query(client, action="denied"))["records"]
    assert (denied["repo"], denied["path"], denied["status"]) == ("releases-local", "app.bin", 403)
    assert "127.0.0.0/8" in denied["deniedBy"] and denied["clientIp"] == "127.0.0.1"


async def test_each_record_names_its_own_client_when_clients_take_turns(aiohttp_client: Any, tmp_path: Path) -> None:
    """Behind a trusted proxy, requests of several clients in turn (and one of the proxy itself)
    are each recorded with the address of the client that made it."""
    settings = make_settings(tmp_path, access=AccessSettings(trusted_proxies=("127.0.0.1/32",)))
    client = await aiohttp_client(create_app(settings))
    clients = ["192.0.2.1", "192.0.2.2", "192.0.2.2", "2001:db8::7", "192.0.2.1", None, "192.0.2.1"]
    for address in clients:
        headers = {"X-Forwarded-For": address} if address else {}
        assert (await client.get(f"/artifactory/{UPLOADS}/missing.bin", headers=headers)).status == 404
    await settle(client, len(clients))
    found = (await query(client))["records"]
    assert [r["clientIp"] for r in reversed(found)] == [a or "127.0.0.1" for a in clients]


async def test_records_name_the_user_and_the_token_that_was_presented(edge: Any) -> None:
    await upload(edge, "t.bin", b"t")
    await edge.put("/artifactory/api/security/users/tom", json={"password": "tom-password"}, headers=admin())
    made = await (await edge.post("/access/api/v1/tokens", json={"username": "tom"}, headers=admin())).json()
    url = f"/artifactory/{UPLOADS}/t.bin"
    assert (await edge.get(url, headers={"Authorization": f"Bearer {made['access_token']}"})).status == 200
    assert (
        await edge.get(url, headers={"Authorization": aiohttp.encode_basic_auth("tom", "tom-password")})
    ).status == 200
    await settle(edge, 5)
    by_basic, by_token = (await query(edge, action="download"))["records"]
    assert (by_token["subject"], by_token["tokenId"]) == ("tom", made["token_id"])
    assert (by_basic["subject"], by_basic["tokenId"]) == ("tom", None)


async def test_health_checks_are_not_recorded(edge: Any) -> None:
    for _ in range(3):
        assert (await edge.get("/artifactory/api/system/ping")).status == 200
    assert (await edge.get("/artifactory/api/system/version")).status == 200
    await settle(edge, 1)
    assert [r["action"] for r in (await query(edge))["records"]] == ["read"]


def record(
    time_ms: int, path: str = "f.bin", *, client_ip: str | None = "192.0.2.1", subject: str = "u"
) -> AuditRecord:
    return AuditRecord(
        time=time_ms,
        subject=subject,
        token_id=None,
        signed_kid=None,
        signed_iat=None,
        client_ip=client_ip,
        country=None,
        method="GET",
        action="download",
        repo=UPLOADS,
        path=path,
        status=200,
        bytes=1,
        denied_by=None,
        aborted=False,
        duration_ms=0,
        counts_as_download=True,
    )


@pytest.fixture
async def audit_db(db_target: str, tmp_path: Path) -> Any:
    """The edge's database, on sqlite and on PostgreSQL."""
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, edge_migrations)
    yield db
    await db.close()


async def test_the_writer_flushes_on_its_own_and_on_close(audit_db: Database) -> None:
    store = AuditStore(audit_db)
    trail = AuditTrail(store, enabled=True, flush_interval=0.05, retention_days=0)
    trail.start()
    trail.record(record(int(time.time() * 1000)))
    deadline = time.monotonic() + WAIT
    while not await store.query(_all()):
        if time.monotonic() > deadline:
            pytest.fail("the writer never flushed")
        await asyncio.sleep(0.02)
    slow = AuditTrail(store, enabled=True, flush_interval=1.0, retention_days=0)
    slow.start()
    for _ in range(5):
        slow.record(record(int(time.time() * 1000)))
    await slow.close()
    await trail.close()
    assert len(await store.query(_all())) == 6
    assert (await store.download_stats(UPLOADS, "f.bin")).count == 6


@pytest.mark.parametrize("count", [0, 1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1])
async def test_a_batch_of_any_size_is_written_whole_and_in_order(audit_db: Database, count: int) -> None:
    """Batches go to the database a hundred records to a statement: every record of a batch just
    under, at and over that size is kept, numbered in the order it was recorded, and counted."""
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    written = [record(now + i, f"f{i}.bin", client_ip=f"192.0.2.{i % 256}", subject=f"u{i}") for i in range(count)]
    await store.write(written)
    kept = await store.query(_all())
    assert [(r.time, r.path, r.client_ip, r.subject) for r in reversed(kept)] == [
        (r.time, r.path, r.client_ip, r.subject) for r in written
    ]
    assert [r.id for r in reversed(kept)] == sorted(r.id for r in kept)
    if count:
        assert (await store.download_stats(UPLOADS, f"f{count - 1}.bin")).count == 1
        ip = ipaddress.ip_network(f"192.0.2.{(count - 1) % 256}/32")
        assert any(r.path == f"f{count - 1}.bin" for r in await store.query(AuditQuery(ip=ip, limit=1000)))


async def test_fields_set_in_only_some_records_of_a_batch_are_kept_exactly(audit_db: Database) -> None:
    """A field empty in most records (a token, a signed URL's key, a country, a refusal's rule, a
    virtual repo's member, even the address or the path) is kept exactly where a record has it,
    whichever hundred of the batch that record falls in, and stays empty everywhere else."""
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    written = [record(now + i, f"f{i}.bin") for i in range(2 * ROWS_PER_INSERT + 1)]
    full = dict(token_id="t1", signed_kid="k1", signed_iat=now - 5, country="NL", denied_by="ip-deny", served_from="m")
    written[0] = written[0]._replace(**full)
    written[ROWS_PER_INSERT + 1] = written[ROWS_PER_INSERT + 1]._replace(country="DE", aborted=True, status=206)
    written[-1] = written[-1]._replace(client_ip=None, repo=None, path=None, action="other", counts_as_download=False)
    await store.write(written)
    kept = list(reversed(await store.query(AuditQuery(limit=1000))))
    fields = ("time", "subject", "token_id", "signed_kid", "signed_iat", "client_ip", "country", "method", "action",
              "repo", "path", "status", "bytes", "denied_by", "aborted", "duration_ms", "served_from")  # fmt: skip
    assert [tuple(getattr(r, f) for f in fields) for r in kept] == [
        tuple(int(getattr(r, f)) if f == "aborted" else getattr(r, f) for f in fields) for r in written
    ]
    from_there = await store.query(AuditQuery(ip=ipaddress.ip_network("192.0.2.1/32"), limit=1000))
    assert len(from_there) == len(written) - 1  # the record without an address is in no network


async def test_the_last_download_is_the_latest_even_when_the_clock_went_back(audit_db: Database) -> None:
    """Within one batch the wall clock may step back: a file's last download is still the one with
    the latest time (the later recorded of two at the same time), and every download counts."""
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    await store.write(
        [record(now + 5, subject="a"), record(now + 2, subject="b"), record(now + 5, subject="c"), record(now + 1)]
    )
    stats = await store.download_stats(UPLOADS, "f.bin")
    assert (stats.count, stats.last_downloaded, stats.last_downloaded_by) == (4, now + 5, "c")


async def test_a_delete_in_a_batch_resets_the_count_of_the_downloads_before_it(audit_db: Database) -> None:
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    delete = record(now + 2, "d")._replace(method="DELETE", action="delete", status=204, counts_as_download=False)
    await store.write(
        [
            record(now, "d/x.bin"),
            record(now + 1, "d/x.bin"),
            record(now + 1, "y.bin"),
            delete,
            record(now + 3, "d/x.bin"),
        ]
    )
    stats = await store.download_stats(UPLOADS, "d/x.bin")
    assert (stats.count, stats.last_downloaded) == (1, now + 3)
    assert (await store.download_stats(UPLOADS, "y.bin")).count == 1


async def test_retention_removes_only_old_records_and_nothing_rewrites_them(audit_db: Database) -> None:
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    await store.write([record(now - 40 * DAY_MS), record(now - 31 * DAY_MS), record(now - 2 * DAY_MS), record(now)])
    assert await store.prune(30) == 2
    assert [r.time for r in await store.query(_all())] == [now, now - 2 * DAY_MS]
    assert (await store.download_stats(UPLOADS, "f.bin")).count == 4  # statistics outlive the records
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="append-only"):
        await audit_db.run(audit_db.db.execute, "UPDATE audit SET subject = 'someone else'")
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="younger than a day"):
        await audit_db.run(audit_db.db.execute, "DELETE FROM audit")
    assert len(await store.query(_all())) == 2


def _all() -> AuditQuery:
    return AuditQuery(limit=1000)


ADDRESSES = (
    "192.0.1.255",
    "192.0.2.0",
    "192.0.2.1",
    "192.0.2.255",
    "192.0.3.0",
    "198.51.100.7",
    "2001:db8::",
    "2001:db8:0:1::1",
    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db9::",
    "::ffff:192.0.2.1",
)


@pytest.mark.parametrize(
    ("ip", "found"),
    [
        ("0.0.0.0/0", ADDRESSES[:6]),
        ("192.0.2.0/23", ("192.0.2.0", "192.0.2.1", "192.0.2.255", "192.0.3.0")),
        ("192.0.2.0/24", ("192.0.2.0", "192.0.2.1", "192.0.2.255")),
        ("192.0.2.0/31", ("192.0.2.0", "192.0.2.1")),
        ("192.0.2.1/32", ("192.0.2.1",)),
        ("192.0.2.2/32", ()),
        ("192.0.2.7/24", ("192.0.2.0", "192.0.2.1", "192.0.2.255")),  # host bits set: the block
        ("::/0", ADDRESSES[6:]),
        ("2001:db8::/32", ("2001:db8::", "2001:db8:0:1::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
        ("2001:db8::/64", ("2001:db8::",)),
        ("2001:db8::/128", ("2001:db8::",)),
        ("::ffff:0:0/96", ("::ffff:192.0.2.1",)),
    ],
)
async def test_a_search_by_network_finds_exactly_the_records_from_addresses_in_it(
    audit_db: Database, ip: str, found: tuple[str, ...]
) -> None:
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    await store.write([record(now, client_ip=address) for address in (*ADDRESSES, None)])
    query = AuditQuery(ip=ipaddress.ip_network(ip, strict=False), limit=1000)
    assert sorted(r.client_ip or "" for r in await store.query(query)) == sorted(found)


async def test_every_filter_and_the_cursor_select_the_same_records_on_both_engines(audit_db: Database) -> None:
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    written = [
        record(now, "rel/a.bin"),
        record(now + 1, "rel/a/b.bin", subject="mona"),
        record(now + 2, "rel/\u00e9.bin")._replace(status=403, action="deploy", denied_by="rule"),
        record(now + 3, "rel/\U0001f600.bin")._replace(status=401, repo="other"),
        record(now + 4, "relx.bin"),
        record(now + 5, "Rel/a.bin"),
    ]
    await store.write(written)

    async def paths(**fields: Any) -> list[str | None]:
        return [r.path for r in await store.query(AuditQuery(limit=1000, **fields))]

    assert await paths(path="rel/*") == ["rel/\U0001f600.bin", "rel/\u00e9.bin", "rel/a/b.bin", "rel/a.bin"]
    assert await paths(path="rel/a*") == ["rel/a/b.bin", "rel/a.bin"]  # a prefix, case and all
    assert await paths(path="*") == [r.path for r in reversed(written)]
    assert await paths(path="rel/a.bin") == ["rel/a.bin"]
    assert await paths(action="denied") == ["rel/\U0001f600.bin", "rel/\u00e9.bin"]
    assert await paths(action="deploy") == ["rel/\u00e9.bin"]
    assert await paths(repo="other") == ["rel/\U0001f600.bin"]
    assert await paths(subject="mona") == ["rel/a/b.bin"]
    assert await paths(since=now + 1, until=now + 3) == ["rel/\u00e9.bin", "rel/a/b.bin"]
    _, second = await store.query(AuditQuery(limit=2))
    older = await store.query(AuditQuery(limit=3, before_id=second.id))
    assert [r.path for r in older] == ["rel/\U0001f600.bin", "rel/\u00e9.bin", "rel/a/b.bin"]


async def test_records_written_before_the_upgrade_are_found_by_network(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as conn:  # the edge's database as the release before wrote it
        old = sqlite_utils.Database(conn)
        catalog_migrations.apply(old)
        edge_migrations.apply(old, stop_before="m007_audit_packed_addresses")
        row = "(1, 'old', ?, 'GET', 'download', 200, 1)"
        sql = f"INSERT INTO audit (time, subject, client_ip, method, action, status, bytes) VALUES {row}, {row}, {row}"
        conn.execute(sql, ["10.1.2.3", "2001:db8::5", None])
    db = Database(path)
    await db.open(catalog_migrations, edge_migrations)
    try:
        store = AuditStore(db)
        found = await store.query(AuditQuery(ip=ipaddress.ip_network("10.0.0.0/8")))
        assert [r.client_ip for r in found] == ["10.1.2.3"]
        found = await store.query(AuditQuery(ip=ipaddress.ip_network("2001:db8::5")))
        assert [r.client_ip for r in found] == ["2001:db8::5"]
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="append-only"):
            await db.run(db.db.execute, "UPDATE audit SET subject = 'someone else'")
    finally:
        await db.close()


async def test_text_from_outside_with_a_nul_is_recorded_and_holds_up_nothing(audit_db: Database) -> None:
    store = AuditStore(audit_db)
    now = int(time.time() * 1000)
    odd = record(now, subject="issuer\x00x")._replace(denied_by="bad \x00 token")
    trail = AuditTrail(store, enabled=True, flush_interval=60, retention_days=0)
    trail.record(odd)
    trail.record(record(now + 1))
    assert await trail.flush() == 2 and trail.pending == 0
    second, first = await store.query(_all())
    assert (first.subject, first.denied_by, second.subject) == ("issuer\ufffdx", "bad \ufffd token", "u")
    assert (await store.download_stats(UPLOADS, "f.bin")).last_downloaded_by == "u"


async def test_replicas_writing_downloads_of_one_file_at_once_count_every_one(db_target: str, tmp_path: Path) -> None:
    """Two edges on one database (replicas, or worker processes) flush batches that count the
    same file at the same time: on PostgreSQL they race for its row, and the loser runs again."""
    replicas = [Database(db_target, local_dir=tmp_path / f"local{i}") for i in range(2)]
    for db in replicas:
        await db.open(catalog_migrations, edge_migrations)
    try:
        stores = [AuditStore(db) for db in replicas]
        start = int(time.time() * 1000)
        batches = 60

        async def flush_all(n: int, store: AuditStore) -> None:
            for b in range(batches):
                stamp = start + 2 * b + n  # the last of all: replica 1's last batch
                await store.write([record(stamp, subject=f"replica{n}") for _ in range(5)])

        await asyncio.gather(*(flush_all(n, store) for n, store in enumerate(stores)))
        stats = await stores[0].download_stats(UPLOADS, "f.bin")
        assert (stats.count, stats.last_downloaded, stats.last_downloaded_by) == (
            2 * batches * 5,
            start + 2 * (batches - 1) + 1,
            "replica1",
        )
        assert len(await stores[1].query(_all())) == 2 * batches * 5
    finally:
        for db in replicas:
            await db.close()
