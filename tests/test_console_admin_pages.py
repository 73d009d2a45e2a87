"""The console's edge registry with tiers and pull mode, and its webhook pages: each form does what
the API's call does (the same functions), with the API's roles and the session's CSRF token."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from devstack.services import free_port
from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, admin
from tests.console_client import csrf_of, form_post, log_in, reader_token
from tests.test_distribution_api import REPO, V1
from wire import pull

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens: pings and deliveries fail at once
PLACE = {"site_name": "s", "city_name": "c", "country_code": "DE"}


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist",
        port=0,
        admin_token=ADMIN_TOKEN,
        repos=(REPO,),
        webhook_retry_base=3600,
        webhook_retry_max=3600,
    )
    return await aiohttp_client(create_app(settings))


async def edges(client: Any) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in await (await client.get(f"{V1}/edges", headers=admin())).json()}


async def add_edge(client: Any, **fields: str) -> Any:
    return await form_post(client, "/ui/edges", "/ui/edges", **(PLACE | fields))


async def test_a_pull_mode_edge_added_in_the_form_shows_its_credential_once(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    resp = await add_edge(dist, name="shop", mode="pull")
    page = await resp.text()
    assert resp.status == 201, page
    credential = re.search(r'<code id="credential">([^<]+)</code>', page)
    assert credential
    assert (await edges(dist))["shop"]["mode"] == "pull"
    assert "not polled yet" in await edge_row(dist, "shop")
    # the credential works as the CLI's does: the edge polls with it
    poll = await dist.get(pull.work_path("shop"), headers={pull.CREDENTIAL_HEADER: credential.group(1)})
    assert poll.status == 200 and await poll.json() == {"work": []}
    assert credential.group(1) not in await (await dist.get("/ui/edges")).text()
    row = await edge_row(dist, "shop")
    assert '<td class="mode">pull</td>' in row and "(polls the service)" in row and "not polled yet" not in row


async def edge_row(client: Any, name: str) -> str:
    listed = await (await client.get("/ui/edges")).text()
    return listed.split(f'data-edge="{name}"')[1].split("</tr>")[0]


async def test_an_edge_added_via_a_parent_shows_its_tier_on_both_rows(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    assert (await add_edge(dist, name="hub", url=DEAD, token="t")).status == 303
    assert (await add_edge(dist, name="leaf", url=DEAD, token="t", parent="hub")).status == 303
    assert (await edges(dist))["leaf"]["parent"] == "hub"
    page = await (await dist.get("/ui/edges")).text()
    assert '<td class="tier">via hub</td>' in page and '<td class="tier">parent of leaf</td>' in page
    assert '<td class="mode">push</td>' in page
    # only an edge the service pushes to directly is offered as a parent
    options = re.search(r'<select id="edge-parent" name="parent">(.*?)</select>', page, re.S)
    assert options and "<option >hub</option>" in options.group(1) and "leaf" not in options.group(1)


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"name": "leaf", "url": DEAD, "token": "t", "parent": "nowhere"}, 409, "not registered"),
        ({"name": "leaf", "url": DEAD, "token": "t", "parent": "leaf"}, 409, "itself"),
        ({"name": "leaf", "mode": "pull", "url": DEAD}, 400, "pull-mode edge has no"),
        ({"name": "leaf", "mode": "pull", "parent": "hub"}, 400, "pull-mode edge"),
        ({"name": "leaf", "url": "", "token": "t"}, 400, "'url'"),
    ],
)
async def test_a_refused_edge_shows_the_apis_reason_and_stores_nothing(
    dist: Any, fields: dict[str, str], status: int, says: str
) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    assert (await add_edge(dist, name="hub", url=DEAD, token="t")).status == 303
    resp = await add_edge(dist, **fields)
    page = html.unescape(await resp.text())
    assert resp.status == status and says in page and 'role="alert"' in page
    assert set(await edges(dist)) == {"hub"}


async def test_a_reader_sees_no_edge_form_and_a_forged_add_is_403(dist: Any) -> None:
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    page = await (await dist.get("/ui/edges")).text()
    assert "Add an edge" not in page and "Reached via" not in page
    data = {"csrf": csrf_of(await (await dist.get("/ui/bundles")).text()), "name": "x", "mode": "pull"} | PLACE
    resp = await dist.post("/ui/edges", data=data, allow_redirects=False)
    assert resp.status == 403 and await edges(dist) == {}


async def subscriptions(client: Any) -> list[dict[str, Any]]:
    return list(await (await client.get(f"{V1}/webhooks", headers=admin())).json())


async def subscribe(client: Any, **fields: Any) -> Any:
    page = await client.get("/ui/webhooks")
    data: dict[str, Any] = {"csrf": csrf_of(await page.text()), "url": f"{DEAD}/hook"} | fields
    return await client.post("/ui/webhooks", data=data, allow_redirects=False)


async def test_an_admin_adds_a_subscription_and_sees_its_secret_once(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    resp = await subscribe(dist, events=["bundle.created", "bundle.signed"], secret="s" * 16)
    page = await resp.text()
    assert resp.status == 201 and f'<code id="secret">{"s" * 16}</code>' in page
    [sub] = await subscriptions(dist)
    assert sub["events"] == ["bundle.created", "bundle.signed"] and sub["url"] == f"{DEAD}/hook"
    listed = await (await dist.get("/ui/webhooks")).text()
    assert "s" * 16 not in listed and f"{DEAD}/hook" in listed
    # no secret given: one is made, and shown this once
    page = await (await subscribe(dist, events="*")).text()
    made = re.search(r'<code id="secret">([^<]+)</code>', page)
    assert made and len(made.group(1)) >= 16


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"events": "*", "url": "ftp://x.example/"}, "'url' must be an http or https URL"),
        ({"events": "*", "url": "http://u:p@x.example/"}, "credentials"),
        ({}, "'events'"),
        ({"events": "bundle.nope"}, "Unknown event"),
        ({"events": "*", "secret": "s" * 15}, "'secret'"),
        ({"events": "*", "secret": "s" * 513}, "'secret'"),
    ],
)
async def test_a_refused_subscription_shows_the_apis_reason_and_stores_nothing(
    dist: Any, fields: dict[str, str], says: str
) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    resp = await subscribe(dist, **fields)
    assert resp.status == 400 and says in html.unescape(await resp.text())
    assert await subscriptions(dist) == []


@pytest.mark.parametrize("length", [16, 17, 511, 512])
async def test_a_secret_of_16_to_512_characters_is_taken(dist: Any, length: int) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    assert (await subscribe(dist, events="*", secret="k" * length)).status == 201


async def test_a_subscription_is_disabled_enabled_and_removed_from_its_page(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    await subscribe(dist, events="*")
    [sub] = await subscriptions(dist)
    url = f"/ui/webhooks/{sub['id']}"
    for bad in ("", "no", "TRUE"):
        assert (await form_post(dist, url, f"{url}/enabled", enabled=bad)).status == 400
    assert (await subscriptions(dist))[0]["enabled"] is True
    assert (await form_post(dist, url, f"{url}/enabled", enabled="false")).status == 303
    [sub] = await subscriptions(dist)
    assert sub["enabled"] is False and "disabled by an administrator" in await (await dist.get(url)).text()
    assert (await form_post(dist, url, f"{url}/enabled", enabled="true")).status == 303
    assert (await subscriptions(dist))[0]["enabled"] is True
    assert (await form_post(dist, url, f"{url}/remove")).status == 303
    assert await subscriptions(dist) == []
    assert (await dist.get(url)).status == 404


async def test_the_delivery_log_shows_each_attempt_and_a_delivery_is_sent_again(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    await subscribe(dist, events="bundle.created")
    [sub] = await subscriptions(dist)
    await dist.put(f"/artifactory/{REPO}/a/1/a.bin", data=b"a", headers=admin())
    body = {"name": "a", "version": "1", "spec": {"queries": [{"pattern": f"{REPO}/a/1/*"}]}}
    assert (await dist.post(f"{V1}/release_bundle", json=body, headers=admin())).status == 201
    url = f"/ui/webhooks/{sub['id']}"
    [first] = await (await dist.get(f"{V1}/webhooks/{sub['id']}/deliveries", headers=admin())).json()
    page = await (await dist.get(url)).text()
    assert f'data-delivery="{first["id"]}"' in page and "bundle.created" in page and "Deliveries (1)" in page
    resp = await form_post(dist, url, f"/ui/webhooks/deliveries/{first['id']}/redeliver")
    assert resp.status == 303 and resp.headers["Location"] == url
    log = await (await dist.get(f"{V1}/webhooks/{sub['id']}/deliveries", headers=admin())).json()
    assert [d["event_id"] for d in log] == [first["event_id"]] * 2
    assert "Deliveries (2)" in await (await dist.get(url)).text()
    assert (await form_post(dist, url, "/ui/webhooks/deliveries/999999/redeliver")).status == 404


async def test_a_reader_cannot_open_the_webhook_pages_nor_forge_a_change(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    await subscribe(dist, events="*")
    [sub] = await subscriptions(dist)
    dist.session.cookie_jar.clear()
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    csrf = csrf_of(await (await dist.get("/ui/bundles")).text())
    for url in ("/ui/webhooks", f"/ui/webhooks/{sub['id']}"):
        assert (await dist.get(url)).status == 403
    posts = [
        ("/ui/webhooks", {"url": "http://x.example/", "events": "*"}),
        (f"/ui/webhooks/{sub['id']}/enabled", {"enabled": "false"}),
        (f"/ui/webhooks/{sub['id']}/remove", {}),
    ]
    for action, fields in posts:
        resp = await dist.post(action, data={"csrf": csrf} | fields, allow_redirects=False)
        assert resp.status == 403, action
    assert [(s["id"], s["enabled"]) for s in await subscriptions(dist)] == [(sub["id"], True)]


async def test_a_webhook_form_without_the_sessions_csrf_token_is_403_and_changes_nothing(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    await subscribe(dist, events="*")
    [sub] = await subscriptions(dist)
    for action in ("/ui/webhooks", f"/ui/webhooks/{sub['id']}/enabled", f"/ui/webhooks/{sub['id']}/remove"):
        for data in ({}, {"csrf": "forged"}):
            resp = await dist.post(action, data=data | {"url": "http://x.example/", "events": "*"})
            assert resp.status == 403, action
    assert [(s["id"], s["enabled"]) for s in await subscriptions(dist)] == [(sub["id"], True)]
