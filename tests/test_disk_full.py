"""A full disk (ENOSPC) on an edge: the write fails cleanly, its partial bytes are freed,
and everything already published is still served.

The edge's data directory sits on a small tmpfs mounted for the test, so the kernel
itself answers ENOSPC; nothing is simulated. Mounting needs root, which the test
machines (developers' and CI's) are.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import EdgeProcess
from tests.edge_setup import download
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_transactions import KEYS, REPO, TX, Remote, manifest_of, sha256, signed, tx_id

MiB = 1024 * 1024
DISK = 24 * MiB
UPLOADS = "artifactory-edge-uploads"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leftovers(edge: EdgeProcess) -> list[Path]:
    """Temp and staged files: what a failed write must not leave behind."""
    data = edge.data_dir
    return [p for p in [*data.glob("blobs/tmp/*"), *data.glob("staging/*/*")] if p.is_file()]


def test_an_upload_that_fills_the_disk_fails_cleanly_and_published_files_stay_served(small_disk: Path) -> None:
    with EdgeProcess(small_disk / "edge") as edge:
        remote = Remote(edge)
        small = os.urandom(64 * 1024)
        assert remote.call("PUT", f"/artifactory/{UPLOADS}/kept.bin", data=small, headers=remote.admin).ok
        before = free_bytes(small_disk)
        resp = remote.call("PUT", f"/artifactory/{UPLOADS}/big.bin", data=os.urandom(DISK), headers=remote.admin)
        assert resp.status_code == 507, resp.text
        assert resp.json()["errors"][0]["message"].startswith("Insufficient storage")
        assert leftovers(edge) == []
        assert free_bytes(small_disk) >= before - MiB  # the partial blob's space is given back
        assert download(edge.url, f"{UPLOADS}/kept.bin") == (200, small)
        assert remote.visible(f"{UPLOADS}/big.bin") == 404
        # and the node keeps working once there is room again
        again = os.urandom(1 * MiB)
        assert remote.call("PUT", f"/artifactory/{UPLOADS}/after.bin", data=again, headers=remote.admin).ok
        assert download(edge.url, f"{UPLOADS}/after.bin") == (200, again)


def test_a_distributed_blob_that_fills_the_disk_is_refused_and_nothing_of_the_bundle_shows(
    small_disk: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    big = os.urandom(DISK)
    files = {"big.bin": big, "small.txt": b"small"}
    body = signed(key_factory, keys.alice, manifest_of(files))
    tid = tx_id(body)
    with EdgeProcess(small_disk / "edge") as edge:
        remote = Remote(edge)
        kept = os.urandom(64 * 1024)
        assert remote.call("PUT", f"/artifactory/{UPLOADS}/kept.bin", data=kept, headers=remote.admin).ok
        assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
        assert remote.call("POST", TX, json=body).status_code == 201
        before = free_bytes(small_disk)
        resp = remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(big)}", data=big)
        assert resp.status_code == 507, resp.text
        assert leftovers(edge) == []
        assert free_bytes(small_disk) >= before - MiB
        # the transaction was aborted: nothing of it can be committed or seen
        assert remote.call("GET", f"{TX}/{tid}").json()["state"] == "ABORTED"
        assert remote.call("POST", f"{TX}/{tid}/commit").status_code == 409
        assert remote.visible(f"{REPO}/app/1.0.0/small.txt") == 404
        assert download(edge.url, f"{UPLOADS}/kept.bin") == (200, kept)
