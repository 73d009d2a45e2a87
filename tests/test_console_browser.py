"""The web console in a real browser (Debian's chromium, headless, driven by Playwright) against
real processes: a Distribution service and two edges, wired as an operator wires them.

One browser and one set of processes serve the whole module; each test makes its own bundle.
Screenshots of the main pages land in ``test-artifacts/console/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from devstack import wiring
from devstack.rest import expect as call
from devstack.services import DistributionProcess, EdgeProcess, free_port
from tests.distribution_process import run_for_test
from tests.edge_setup import download

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
REPO = "releases-local"
V1 = "/distribution/api/v1"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,*/*;q=0.8"


@dataclass
class World:
    dist: DistributionProcess
    edges: list[EdgeProcess]
    browser: Browser


def _edge(base: Path) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(base)
    edge.start()
    try:
        yield edge
    finally:
        assert edge.stop() == 0, edge.log_tail()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("console")
    dist_run = run_for_test(DistributionProcess(base / "distribution"))
    edge_runs = [_edge(base / f"edge-{n}") for n in (1, 2)]
    dist, edges = next(dist_run), [next(e) for e in edge_runs]
    targets = [wiring.edge_target(i, e.url, e.admin_token) for i, e in enumerate(edges)]
    wiring.connect(dist.url, dist.admin_token, targets, wiring.State(None), lambda _line: None)
    # an edge that never answers, in a place of its own: its distribution stays in progress until aborted
    offline = {"name": "edge-off", "url": f"http://127.0.0.1:{free_port()}", "token": "unused"}
    offline |= {"site_name": "offline", "city_name": "nowhere", "country_code": "AQ"}
    call((201,), "POST", f"{dist.url}{V1}/edges", dist.admin_token, offline)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield World(dist, edges, browser)
        finally:
            browser.close()
            for run in (*edge_runs, dist_run):
                next(run, None)


def deploy(world: World, version: str) -> dict[str, bytes]:
    files = {
        f"app/{version}/app.tar.gz": hashlib.shake_256(version.encode()).digest(300_000),
        f"app/{version}/notes.txt": b"notes",
    }
    for path, data in files.items():
        headers = {"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}
        call(
            (201,),
            "PUT",
            f"{world.dist.url}/artifactory/{REPO}/{path}",
            world.dist.admin_token,
            data=data,
            headers=headers,
        )
    return files


def logged_in(
    world: World, token: str, width: int = 1200, base_url: str | None = None, home: str = "Release bundles"
) -> tuple[BrowserContext, Page]:
    """A new browser context logged in to a console (the service's, or an edge's at ``base_url``)."""
    context = world.browser.new_context(base_url=base_url or world.dist.url, viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto("/ui/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=home)).to_be_visible()
    return context, page


def reader_token(world: World) -> str:
    body = {"username": "rita", "scope": "reader"}
    answer = call((200, 201), "POST", f"{world.dist.url}/access/api/v1/tokens", world.dist.admin_token, body)
    return str(answer["access_token"])


def create_bundle(page: Page, version: str, *, sign: bool) -> None:
    page.goto("/ui/bundles/new")
    page.get_by_label("Name", exact=True).fill("app")
    page.get_by_label("Version", exact=True).fill(version)
    page.get_by_label("Query", exact=True).fill(f"{REPO}/app/{version}/*")
    if sign:
        page.get_by_label("Sign it at once").check()
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=f"app {version}")).to_be_visible()


def test_a_release_manager_creates_signs_distributes_and_watches_it_complete_live(world: World) -> None:
    files = deploy(world, "1.0")
    context, page = logged_in(world, world.dist.admin_token)
    page.goto("/ui/bundles/new")
    page.get_by_label("Name", exact=True).fill("app")
    page.get_by_label("Version", exact=True).fill("1.0")
    page.get_by_label("Query", exact=True).fill(f"{REPO}/app/1.0/*")
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.locator("#preview tbody tr")).to_have_count(2)
    page.screenshot(path=SHOTS / "bundle-preview.png", full_page=True)
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#state")).to_have_text("OPEN")
    page.get_by_role("button", name="Sign").click()
    expect(page.locator("#state")).to_have_text("SIGNED")
    fingerprint = call((200,), "GET", f"{world.dist.url}{V1}/keys/gpg", world.dist.admin_token)["keys"][0][
        "fingerprint"
    ]
    expect(page.locator("#signature")).to_contain_text(fingerprint)
    for data in files.values():
        expect(page.locator("#files")).to_contain_text(hashlib.sha256(data).hexdigest())

    page.get_by_label("Country codes (comma-separated)").fill("US, DE")
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#reached tbody tr")).to_have_count(2)
    expect(page.locator("#reached")).not_to_contain_text("edge-off")
    page.get_by_role("button", name="Distribute to these edges").click()
    expect(page.get_by_role("heading", name="distribution")).to_be_visible()
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
    expect(page.locator("#status")).to_have_text("Completed", timeout=60_000)
    for edge in ("edge-1", "edge-2"):
        expect(page.locator(f'tr[data-edge="{edge}"] .state')).to_have_text("Completed")
        expect(page.locator(f'tr[data-edge="{edge}"] .files')).to_have_text("2/2")
    assert page.evaluate("window.sameDocument") is True
    expect(page.get_by_role("button", name="Abort")).to_be_hidden()
    assert int(page.locator("#live").get_attribute("data-events") or "0") >= 1  # delivered by the EventSource
    page.screenshot(path=SHOTS / "distribution.png", full_page=True)
    page.goto("/ui/edges")
    expect(page.locator('tr[data-edge="edge-1"] .health')).to_have_text("healthy")
    expect(page.locator('tr[data-edge="edge-1"]')).to_contain_text("app 1.0")
    expect(page.locator('tr[data-edge="edge-1"] .lag')).to_have_text("up to date")
    page.screenshot(path=SHOTS / "edges.png", full_page=True)
    context.close()


def test_an_edge_folder_is_browsable_and_its_files_download_whole(world: World) -> None:
    files = deploy(world, "2.0")
    context, page = logged_in(world, world.dist.admin_token)
    create_bundle(page, "2.0", sign=True)
    page.get_by_label("Country codes (comma-separated)").fill("DE")
    page.get_by_role("button", name="Distribute", exact=True).click()
    expect(page.locator("#status")).to_have_text("Completed", timeout=60_000)
    page.goto(f"{world.edges[1].url}/artifactory/{REPO}/app/2.0/")
    expect(page.get_by_role("heading", name=f"Index of {REPO}/app/2.0/")).to_be_visible()
    page.screenshot(path=SHOTS / "edge-folder.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="app.tar.gz").click()
    data = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(files["app/2.0/app.tar.gz"]).hexdigest()
    context.close()


def test_a_distribution_that_cannot_finish_is_aborted_from_its_page(world: World) -> None:
    deploy(world, "3.0")
    context, page = logged_in(world, world.dist.admin_token)
    create_bundle(page, "3.0", sign=True)
    page.get_by_label("Site").fill("offline")
    page.get_by_role("button", name="Distribute", exact=True).click()
    expect(page.locator("#status")).to_have_text(re.compile("In queue|In progress"))  # retrying, unreachable
    page.get_by_role("button", name="Abort").click()
    expect(page.locator("#status")).to_have_text("Failed")
    expect(page.locator('tr[data-edge="edge-off"] .error')).to_contain_text("abort")
    page.goto("/ui/edges")
    expect(page.locator('tr[data-edge="edge-off"] .health')).to_contain_text("down")
    context.close()


def test_a_bundle_version_is_removed_from_the_edges_a_rule_picks(world: World) -> None:
    files = deploy(world, "6.0")
    context, page = logged_in(world, world.dist.admin_token)
    create_bundle(page, "6.0", sign=True)
    page.get_by_label("Country codes (comma-separated)").fill("US")
    page.get_by_role("button", name="Distribute", exact=True).click()
    expect(page.locator("#status")).to_have_text("Completed", timeout=60_000)
    target = f"{REPO}/app/6.0/notes.txt"
    assert download(world.edges[0].url, target) == (200, files["app/6.0/notes.txt"])
    page.get_by_role("link", name="Back to the bundle").click()
    page.get_by_label("Country codes (comma-separated)").fill("US")
    page.get_by_role("button", name="Remove from these edges").click()
    expect(page.get_by_text("delete_release_bundle_version")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Completed", timeout=60_000)
    assert download(world.edges[0].url, target)[0] == 404
    context.close()


def test_a_reader_sees_no_change_buttons_and_a_forged_post_is_refused(world: World) -> None:
    deploy(world, "4.0")
    admin_context, admin_page = logged_in(world, world.dist.admin_token)
    create_bundle(admin_page, "4.0", sign=False)
    # a post without the session's CSRF token changes nothing
    refused = admin_page.request.post("/ui/bundles/app/4.0/delete", form={"name": "x"})
    assert refused.status == 403
    admin_context.close()

    context, page = logged_in(world, reader_token(world))
    page.goto("/ui/bundles/app/4.0")
    expect(page.locator("#state")).to_have_text("OPEN")
    for label in ("Sign", "Delete this version"):
        expect(page.get_by_role("button", name=label)).to_have_count(0)
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value") or ""
    forged = page.request.post("/ui/bundles/app/4.0/delete", form={"csrf": csrf})
    assert forged.status == 403 and "may not do this" in forged.text()
    page.screenshot(path=SHOTS / "reader-bundle.png", full_page=True)
    context.close()
    assert (
        call((200,), "GET", f"{world.dist.url}{V1}/release_bundle/app/4.0", world.dist.admin_token)["state"] == "OPEN"
    )


def test_a_bundle_made_by_property_shows_its_sbom_and_the_download_is_what_the_manifest_names(world: World) -> None:
    files = deploy(world, "7.0")
    approved = f"{REPO}/app/7.0/app.tar.gz"
    call(
        (204,),
        "PUT",
        f"{world.dist.url}/artifactory/api/storage/{approved}?properties=RC1-Approved=true",
        world.dist.admin_token,
    )
    context, page = logged_in(world, world.dist.admin_token)
    page.goto("/ui/bundles/new")
    page.get_by_label("Name", exact=True).fill("app")
    page.get_by_label("Version", exact=True).fill("7.0")
    page.get_by_label("Query", exact=True).fill(f"{REPO}/app/7.0/*")
    page.get_by_label("Only files with these properties").fill("RC1-Approved=true")
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.locator("#preview tbody tr")).to_have_count(1)
    expect(page.locator("#preview")).to_contain_text(approved)
    page.screenshot(path=SHOTS / "bundle-preview-props.png", full_page=True)
    page.get_by_label("Sign it at once").check()
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#state")).to_have_text("SIGNED")
    manifest = f"{world.dist.url}{V1}/release_bundle/app/7.0/manifest"
    named = call((200,), "GET", manifest, world.dist.admin_token)["sbom"]
    expect(page.locator("#sbom")).to_contain_text(named["sha256"])
    page.get_by_role("link", name="components").click()
    expect(page.get_by_role("heading", name="SBOM of app 7.0")).to_be_visible()
    expect(page.locator("#sbom-sha256")).to_have_text(named["sha256"])
    expect(page.locator("#components tbody tr")).to_have_count(1)
    expect(page.locator("#components")).to_contain_text(hashlib.sha256(files["app/7.0/app.tar.gz"]).hexdigest())
    page.screenshot(path=SHOTS / "sbom.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the SBOM").click()
    assert download.value.suggested_filename == "app-7.0.cdx.json"
    data = Path(download.value.path()).read_bytes()
    assert {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} == named
    context.close()


def test_an_admin_registers_a_pull_edge_and_a_child_edge_and_manages_a_webhook(world: World) -> None:
    context, page = logged_in(world, world.dist.admin_token)
    page.goto("/ui/edges")
    page.get_by_label("Name").fill("shop-7")
    page.get_by_label("pull: the edge polls the service").check()
    for label, value in (("Site", "shop"), ("City", "Lyon"), ("Country code", "FR")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Add edge").click()
    credential = page.locator("#credential").inner_text()
    assert credential.startswith("shop-7.")
    expect(page.locator('tr[data-edge="shop-7"] .mode')).to_have_text("pull")
    page.screenshot(path=SHOTS / "edges-pull-credential.png", full_page=True)
    page.goto("/ui/edges")
    expect(page.get_by_text(credential)).to_have_count(0)  # shown once
    page.get_by_label("Name").fill("leaf-7")
    page.get_by_label("URL (push mode)").fill(f"http://127.0.0.1:{free_port()}")
    for label, value in (("Site", "leaf"), ("City", "Auckland"), ("Country code", "NZ")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("The edge's token").fill("unused")
    page.get_by_label("Reached via").select_option("edge-1")
    page.get_by_role("button", name="Add edge").click()
    expect(page.locator('tr[data-edge="leaf-7"] .tier')).to_have_text("via edge-1")
    expect(page.locator('tr[data-edge="edge-1"] .tier')).to_have_text("parent of leaf-7")
    page.screenshot(path=SHOTS / "edges-tiers.png", full_page=True)
    for name in ("leaf-7", "shop-7"):  # the other tests' rules see only the module's own edges
        page.get_by_role("button", name=f"Remove {name}").click()
        expect(page.locator(f'tr[data-edge="{name}"]')).to_have_count(0)

    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill(f"http://127.0.0.1:{free_port()}/hook")
    page.get_by_label("bundle.created").check()
    page.get_by_role("button", name="Add subscription").click()
    expect(page.locator("#secret")).not_to_be_empty()
    page.screenshot(path=SHOTS / "webhooks.png", full_page=True)
    deploy(world, "8.0")
    body = {"name": "app", "version": "8.0", "spec": {"queries": [{"pattern": f"{REPO}/app/8.0/*"}]}}
    call((201,), "POST", f"{world.dist.url}{V1}/release_bundle", world.dist.admin_token, body)
    page.locator("#webhooks tbody a").last.click()
    expect(page.locator("#deliveries tbody tr[data-delivery]")).to_have_count(1)
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#enabled")).to_contain_text("disabled")
    page.locator("#deliveries").get_by_role("button").first.click()
    expect(page.locator("#deliveries tbody tr[data-delivery]")).to_have_count(2)
    page.screenshot(path=SHOTS / "webhook.png", full_page=True)
    webhook_page = page.url
    page.get_by_role("button", name="Remove this subscription").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    assert page.goto(webhook_page).status == 404
    context.close()

    context, page = logged_in(world, reader_token(world))
    page.goto("/ui/edges")
    expect(page.get_by_role("button", name="Add edge")).to_have_count(0)
    assert page.goto("/ui/webhooks").status == 403
    expect(page.get_by_role("button", name="Add subscription")).to_have_count(0)
    context.close()


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id)"""
WIDE = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)
    .map(e => e.tagName + '#' + e.id + '.' + e.className)"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_every_control_is_labelled_and_a_400_px_window_needs_no_sideways_scroll(world: World) -> None:
    deploy(world, "5.0")
    context, page = logged_in(world, world.dist.admin_token, width=400)
    create_bundle(page, "5.0", sign=True)
    page.goto("/ui/webhooks")
    page.get_by_label("URL").fill(f"http://127.0.0.1:{free_port()}/narrow")
    page.get_by_label("every event").check()
    page.get_by_role("button", name="Add subscription").click()
    webhook = page.locator("#webhooks tbody a").last.get_attribute("href") or ""
    pages = ["/ui/login", "/ui/bundles", "/ui/bundles/new", "/ui/bundles/app/5.0", "/ui/bundles/app/5.0/sbom"]
    pages += ["/ui/edges", "/ui/keys", "/ui/webhooks", webhook]
    for url in pages:
        page.goto(url)
        assert page.evaluate(UNLABELLED) == [], url
        assert page.evaluate(OVERFLOW) <= 0, (url, page.evaluate(WIDE))
    page.goto("/ui/bundles/app/5.0")
    page.screenshot(path=SHOTS / "bundle-narrow.png", full_page=True)
    page.keyboard.press("Tab")  # the first stop is the skip link, then the sections
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    context.close()


def test_the_edge_console_browses_a_repo_and_makes_a_signed_url_in_a_narrow_window(world: World) -> None:
    edge = world.edges[0]
    url = f"{edge.url}/artifactory/artifactory-edge-uploads/tools/kit.bin"
    sha256 = hashlib.sha256(b"kit").hexdigest()
    call((201,), "PUT", url, edge.admin_token, data=b"kit", headers={"X-Checksum-Sha256": sha256})
    context, page = logged_in(world, edge.admin_token, width=400, base_url=edge.url, home="Repositories")
    page.get_by_role("link", name="artifactory-edge-uploads").click()
    page.get_by_role("link", name="tools/").click()
    expect(page.locator("#listing")).to_contain_text(sha256)
    page.get_by_role("link", name="Signed URL for kit.bin").click()
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#signed-url")).to_contain_text("sig=")
    page.screenshot(path=SHOTS / "edge-signed-url.png", full_page=True)
    for url in ("/ui/repos", "/ui/browse/artifactory-edge-uploads/tools/", "/ui/audit", "/ui/rules", "/ui/signed-url"):
        page.goto(url)
        assert page.evaluate(UNLABELLED) == [], url
        assert page.evaluate(OVERFLOW) <= 0, (url, page.evaluate(WIDE))
    context.close()
