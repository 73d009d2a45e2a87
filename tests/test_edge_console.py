"""The edge's console: repos as folders, the audit trail searched and exported, the access rules,
and signed URLs for a file, each behind the same role the API asks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp

from edge.keys import audit_trail_key
from tests.conftest import ADMIN_TOKEN, UPLOADS, upload
from tests.console_client import csrf_of, form_post, log_in, reader_token


async def test_the_edge_console_browses_repos_as_folders(edge: Any) -> None:
    await upload(edge, "app/1.4.0/app.bin", b"app bytes")
    await log_in(edge, token=ADMIN_TOKEN)
    repos = await (await edge.get("/ui/")).text()
    assert f'href="/ui/browse/{UPLOADS}/"' in repos
    page = await (await edge.get(f"/ui/browse/{UPLOADS}/app/1.4.0/")).text()
    assert f"Index of {UPLOADS}/app/1.4.0/" in page
    assert f'href="/artifactory/{UPLOADS}/app/1.4.0/app.bin"' in page
    assert hashlib.sha256(b"app bytes").hexdigest() in page
    assert (await edge.get(f"/ui/browse/{UPLOADS}/nothing/")).status == 404


async def test_the_audit_trail_is_searched_and_exported_from_the_console(edge: Any) -> None:
    await upload(edge, "a.bin", b"a")
    assert (await edge.get(f"/artifactory/{UPLOADS}/a.bin")).status == 200
    await edge.app[audit_trail_key].flush()  # records are written in batches
    await log_in(edge, token=ADMIN_TOKEN)
    page = await (await edge.get("/ui/audit", params={"action": "download"})).text()
    assert f"<td>{UPLOADS}/a.bin</td>" in page and "<td>deploy</td>" not in page
    export = await edge.get("/ui/audit/export", params={"action": "download", "format": "jsonl"})
    records = [json.loads(line) for line in (await export.text()).splitlines()]
    assert [(r["action"], r["path"]) for r in records] == [("download", "a.bin")]
    bad = await edge.get("/ui/audit", params={"action": "dance"})
    assert bad.status == 400 and "must be one of" in await bad.text()


async def test_an_admin_creates_a_signed_url_that_downloads_the_file(edge: Any) -> None:
    await upload(edge, "s/file.bin", b"signed bytes")
    await log_in(edge, token=ADMIN_TOKEN)
    fields = {"repo_path": f"/{UPLOADS}/s/file.bin", "valid_for_secs": "600"}
    resp = await form_post(edge, "/ui/signed-url", "/ui/signed-url", **fields)
    page = await resp.text()
    assert resp.status == 200 and 'id="signed-url"' in page
    url = page.split('id="signed-url" class="hash" href="')[1].split('"')[0].replace("&amp;", "&")
    async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as download:
        assert download.status == 200 and await download.read() == b"signed bytes"
    missing = await form_post(
        edge, "/ui/signed-url", "/ui/signed-url", repo_path=f"/{UPLOADS}/nope", valid_for_secs="60"
    )
    assert missing.status == 404 and 'id="signed-url"' not in await missing.text()
    no_csrf = await edge.post("/ui/signed-url", data=fields)
    assert no_csrf.status == 403


async def test_the_rules_page_shows_the_rules_and_a_reader_is_refused(edge: Any) -> None:
    rules = {"rules": [{"repos": ["releases-*"], "deny_cidrs": ["203.0.113.0/24"]}]}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await edge.put("/artifactory/api/access/rules", json=rules, headers=admin)).status == 200
    token = await reader_token(edge, ADMIN_TOKEN)
    await log_in(edge, token=ADMIN_TOKEN)
    page = await (await edge.get("/ui/rules")).text()
    assert "203.0.113.0/24" in page and "releases-*" in page
    await form_post(edge, "/ui/rules", "/ui/logout")
    await log_in(edge, token=token)
    assert (await edge.get("/ui/rules")).status == 403
    page = await (await edge.get("/ui/signed-url")).text()
    assert "may not do this" in page
    home = await (await edge.get("/ui/repos")).text()
    forged = await edge.post("/ui/signed-url", data={"csrf": csrf_of(home), "repo_path": "/x/y", "valid_for_secs": "9"})
    assert forged.status == 403
