"""The CI-labels release story, end to end, with the service and an edge as real processes.

CI deploys builds with their properties; one passes its stage and is labelled
``RC1-Approved=true`` through the property API; a Release Bundle is created from whatever
carries the label (AQL, from the ``distribution`` CLI), signed and distributed; a webhook
receiver (a real process checking every signature) hears that the distribution completed;
on the edge exactly the labelled build's files are served, ``?properties`` answers the
label, and the bundle's SBOM, fetched from the edge, checks out against the signed manifest
with plain curl, gpg, sha256sum and jq.

Each step is one function, as README "From CI labels to edges" tells it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.sbom_verify import Endpoint, verify_sbom_with_plain_tools
from tests.test_distribute_e2e import EVERYWHERE, V1
from tests.test_distribution_cli import CLI_TIMEOUT, cli_for
from tests.webhook_receiver import WebhookReceiver

LABEL = "RC1-Approved"
BUILDS = {
    n: {f"app/build-{n}/app.tgz": f"app build {n}".encode() * 100, f"app/build-{n}/notes.md": f"# {n}\n".encode()}
    for n in ("41", "42", "43")
}
APPROVED = "42"
POLL = 0.2


def curl(*args: str, data: bytes | None = None) -> bytes:
    """curl as the README shows it; loopback never goes through a developer's proxy."""
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--noproxy", "*", *args],
        input=data,
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, f"curl {shlex.join(args)}: {done.stderr.decode()} {done.stdout.decode()}"
    return done.stdout


SECRET = "whsec_" + "release-story-only"


@dataclass
class Story:
    service: DistributionProcess
    edge: EdgeProcess
    receiver: WebhookReceiver
    workdir: Path
    bundle: tuple[str, str] = ("app", "1.0.0")


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Story]:
    with (
        DistributionProcess(tmp_path / "d") as service,
        EdgeProcess(tmp_path / "e") as edge,
        WebhookReceiver(tmp_path / "receiver", SECRET) as receiver,
    ):
        yield Story(service, edge, receiver, tmp_path)


def subscribe_the_release_channel(story: Story) -> None:
    """The team's chat bridge subscribes to completed (and failed) distributions, from the CLI."""
    secret = story.workdir / "webhook-secret"
    secret.write_text(SECRET)
    cli = cli_for(story.service)
    added = cli.json(
        "webhook", "add", story.receiver.url, "--event", "distribution.completed", "--event",
        "distribution.failed", "--secret-file", str(secret),
    )  # fmt: skip
    assert added["events"] == ["distribution.completed", "distribution.failed"], added


def deploy_builds_with_properties(story: Story) -> None:
    """CI deploys each build with its build number and VCS revision as matrix parameters."""
    for number, files in BUILDS.items():
        for path, data in files.items():
            url = f"{story.service.url}/artifactory/{SOURCE_REPO}/{path};build.number={number};vcs.revision=r{number}"
            curl(
                "-X",
                "PUT",
                "-H",
                f"Authorization: Bearer {story.service.admin_token}",
                "--data-binary",
                "@-",
                url,
                data=data,
            )


def label_the_approved_build(story: Story) -> None:
    """The stage that approves a build labels its folder; every file below gets the label."""
    where = f"{story.service.url}/artifactory/api/storage/{SOURCE_REPO}/app/build-{APPROVED}"
    curl(
        "-X",
        "PUT",
        "-H",
        f"Authorization: Bearer {story.service.admin_token}",
        f"{where}?properties={LABEL}=true&recursive=1",
    )
    found = http("GET", f"{story.service.url}/artifactory/api/search/prop?{LABEL}=true", story.service.admin_token)
    assert found[0] == 200
    assert sorted(r["uri"].split("/api/storage/")[1] for r in found[1]["results"]) == sorted(
        f"{SOURCE_REPO}/{p}" for p in BUILDS[APPROVED]
    )


def create_and_sign_the_bundle_by_label(story: Story) -> None:
    name, version = story.bundle
    cli = cli_for(story.service)
    aql = f'items.find({{"repo":"{SOURCE_REPO}","@{LABEL}":{{"$eq":"true"}}}})'
    created = cli.json("bundle", "create", name, version, "--aql", aql, "--sign")
    assert created["state"] == "SIGNED", created
    assert sorted(a["sourceRepoPath"] for a in created["artifacts"]) == sorted(
        f"{SOURCE_REPO}/{p}" for p in BUILDS[APPROVED]
    )


def distribute_to_the_edge(story: Story) -> None:
    service, edge = story.service, story.edge
    status, key = http("GET", f"{service.url}{V1}/keys/gpg/public", service.admin_token)
    assert status == 200
    trust(edge, str(key))
    body = {"name": "edge-1", "url": edge.url, "site_name": "s", "city_name": "c", "country_code": "US"}
    status, answer = http(
        "POST", f"{service.url}{V1}/edges", service.admin_token, body | {"token": distributor_token(edge)}
    )
    assert status == 201, answer
    name, version = story.bundle
    status, started = http(
        "POST",
        f"{service.url}{V1}/distribution/{name}/{version}",
        service.admin_token,
        {"distribution_rules": EVERYWHERE},
    )
    assert status == 202, started
    where = f"{service.url}{V1}/release_bundle/{name}/{version}/distribution/{started['id']}"
    for _ in range(int(90 / POLL)):  # a hang guard, not a speed check
        status, progress = http("GET", where, service.admin_token)
        if progress["status"] in ("Completed", "Failed"):
            break
        time.sleep(POLL)
    assert progress["status"] == "Completed", progress


def hear_that_the_distribution_completed(story: Story) -> None:
    """The receiver got one genuine, fresh delivery: the distribution of the labelled bundle completed."""
    got = story.receiver.wait_for(lambda got: len(got) >= 1)
    assert [(r.problem, r.type) for r in got] == [("", "distribution.completed")]
    name, version = story.bundle
    assert (got[0].data["name"], got[0].data["version"]) == (name, version)
    assert got[0].data["sites"] == [{"edge": "edge-1", "status": "Completed", "error": ""}]


def verify_the_sbom_from_the_edge_against_the_signed_manifest(story: Story) -> None:
    """The SBOM the edge serves is the one the signed manifest names, and lists the labelled build."""
    service, edge = story.service, story.edge
    name, version = story.bundle
    checked = verify_sbom_with_plain_tools(
        story.workdir / "plain-tools",
        Endpoint(service.url, service.admin_token),
        Endpoint(edge.url, edge.admin_token),
        name,
        version,
    )
    status, keys = http("GET", f"{service.url}{V1}/keys/gpg", service.admin_token)
    assert status == 200
    assert checked.signer in {k["fingerprint"] for k in keys["keys"]}
    sbom = json.loads(checked.data)
    assert sbom["metadata"]["component"]["name"] == name
    hashes = {c["name"]: {h["alg"]: h["content"] for h in c.get("hashes", [])} for c in sbom["components"]}
    for path, data in BUILDS[APPROVED].items():
        component = hashes[f"{SOURCE_REPO}/{path}"]
        assert component["SHA-256"] == hashlib.sha256(data).hexdigest(), path


def check_the_edge_serves_exactly_the_labelled_build(story: Story) -> None:
    edge = story.edge
    for number, files in BUILDS.items():
        for path, data in files.items():
            status, got = download(edge.url, f"{SOURCE_REPO}/{path}")
            if number == APPROVED:
                assert status == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), path
            else:
                assert status == 404, path
    for path in BUILDS[APPROVED]:
        status, answer = http(
            "GET", f"{edge.url}/artifactory/api/storage/{SOURCE_REPO}/{path}?properties", edge.admin_token
        )
        assert status == 200, answer
        assert answer["properties"] == {
            LABEL: ["true"],
            "build.number": [APPROVED],
            "vcs.revision": [f"r{APPROVED}"],
        }
    status, found = http("GET", f"{edge.url}/artifactory/api/search/prop?{LABEL}=true", edge.admin_token)
    assert sorted(r["uri"].split("/api/storage/")[1] for r in found["results"]) == sorted(
        f"{SOURCE_REPO}/{p}" for p in BUILDS[APPROVED]
    )


def test_a_build_labelled_by_ci_reaches_the_edge_with_its_label_and_nothing_else(story: Story) -> None:
    deploy_builds_with_properties(story)
    label_the_approved_build(story)
    create_and_sign_the_bundle_by_label(story)
    subscribe_the_release_channel(story)
    distribute_to_the_edge(story)
    hear_that_the_distribution_completed(story)
    check_the_edge_serves_exactly_the_labelled_build(story)
    verify_the_sbom_from_the_edge_against_the_signed_manifest(story)
