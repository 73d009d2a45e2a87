"""An edge's memory does not grow with a bundle's file count: the manifest streams, and its files
and missing blobs are handled a page at a time (docs/transactions.md).

Two real edge processes each take a bundle through the real protocol (start with the manifest
as the body, missing pages, blob batches, commit, the status the service verifies with); the
peak resident memory (VmHWM, which does not depend on timing) of the one that took many files
must not exceed the one that took few by more than a bound that a per-file cost would break.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from devstack.services import EdgeProcess
from tests.edge_setup import distributor_token, trust
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_memory import peak_rss
from wire import batch, protocol
from wire.manifest import Manifest, ManifestArtifact, encode

MiB = 1024 * 1024
FEW, MANY = 500, 20_000
# A file cost a holding edge ~4 KiB at its peak when it decoded the manifest whole and listed
# every missing blob at once (~80 MiB more at 20,000 files); pages leave a few MiB of sqlite cache.
GROWTH_LIMIT = 24 * MiB
BATCH = 1000


def bundle(count: int) -> tuple[Manifest, dict[str, bytes]]:
    blobs, artifacts = {}, []
    for i in range(count):
        data = f"file {i} of the bundle\n".encode() * 40
        sha256 = hashlib.sha256(data).hexdigest()
        blobs[sha256] = data
        artifacts.append(
            ManifestArtifact(
                target=f"releases-local/app/{i // 1000:03d}/file-{i:06d}.bin",
                source=f"src-local/file-{i:06d}.bin",
                size=len(data),
                sha256=sha256,
                sha1=hashlib.sha1(data).hexdigest(),
                md5=hashlib.md5(data).hexdigest(),
                properties={"build": [str(i)]},
            )
        )
    return Manifest.create("app", "1.0", artifacts, created_by="release-manager"), blobs


def push(edge: EdgeProcess, keys: KeySet, key_factory: KeyFactory, count: int) -> int:
    """Push a bundle of ``count`` files as the Distribution service does; the edge's peak RSS."""
    trust(edge, keys.alice.public)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {distributor_token(edge)}"
    manifest, blobs = bundle(count)
    data = encode(manifest)
    headers = protocol.start_headers(len(data), key_factory.sign(keys.alice, data).decode())
    started = session.post(edge.url + protocol.TRANSACTIONS, data=data, headers=headers, timeout=120)
    assert started.status_code == 201, started.text
    page = started.json()
    tx = page["transaction_id"]
    del manifest, data
    sent = 0
    while True:
        for start in range(0, len(page["missing"]), BATCH):
            shas = page["missing"][start : start + BATCH]
            body = batch.encode([(sha, blobs[sha]) for sha in shas])
            resp = session.post(edge.url + protocol.batch_path(tx), data=body, timeout=120)
            assert resp.status_code == 200, resp.text
            sent += len(shas)
        if page["missing_next"] is None:
            break
        query = protocol.missing_query(page["missing_next"])
        page = session.get(edge.url + protocol.missing_path(tx), params=query, timeout=120).json()
    assert sent == count
    committed = session.post(edge.url + protocol.commit_path(tx), timeout=300)
    assert committed.status_code == 200 and committed.json()["files"] == count, committed.text
    status = session.get(edge.url + protocol.transaction_path(tx), timeout=120).json()
    assert status["missing"] == [] and status["published"]["files"] == count
    return peak_rss(edge.pid)


def test_an_edge_taking_20000_files_peaks_within_a_few_mib_of_one_taking_500(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    peaks = {}
    for count in (FEW, MANY):
        with EdgeProcess(tmp_path / str(count)) as edge:
            peaks[count] = push(edge, keys, key_factory, count)
    growth = peaks[MANY] - peaks[FEW]
    print(f"edge peak RSS: {peaks[FEW] / MiB:.0f} MiB at {FEW} files, {peaks[MANY] / MiB:.0f} MiB at {MANY}")
    assert growth < GROWTH_LIMIT, f"{growth / MiB:.0f} MiB more for {MANY} files than for {FEW}"
