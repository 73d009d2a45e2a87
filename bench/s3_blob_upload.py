"""One 200 MB blob uploaded to an S3 edge in a transaction, against boto3 putting the same bytes.

What a transaction's blob costs on an S3 edge from the first byte of its PUT to the 201: the
edge's staging (chunks in the bucket, recorded in its database, or a file on its disk) and the
blob's publishing under its final key. The floor, in the same round: boto3 alone uploading
the same file to the same SeaweedFS as a multipart upload of the same part size with as many
parts in flight as the edge may have (``s3_edges.boto3_floor``). Also printed: the edge's peak
RSS after the uploads, which must not grow with the blob's size.

    python bench/s3_blob_upload.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import requests
from common import BenchError, run_bench
from download import write_random_file
from edge_store import Signer
from releases import Content, vm_kib
from s3_edges import PUT_CONCURRENCY, boto3_floor

from devstack.replicas import s3_environment
from devstack.seaweed import SeaweedProcess
from devstack.services import EdgeProcess
from wire.manifest import Manifest, ManifestArtifact, encode

SIZE = 200 * 1000 * 1000
TX = "/artifactory/api/distribution/transactions"


def upload_once(edge: EdgeProcess, signer: Signer, blob: Path, sha256: str, version: str) -> float:
    """Start a transaction of the one blob and PUT it; the seconds the PUT took."""
    artifact = ManifestArtifact(
        target=f"releases-local/big/{version}/big.bin", source="src/big.bin", size=SIZE, sha256=sha256, sha1="0" * 40,
        md5="0" * 32,
    )  # fmt: skip
    data = encode(Manifest.create("big", version, [artifact], created_by="bench"))
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {edge.admin_token}"
    started = session.post(
        edge.url + TX, json={"manifest": data.decode(), "signature": signer.sign(data)}, timeout=120
    )  # fmt: skip
    if started.status_code != 201:
        raise BenchError(f"start refused: {started.status_code} {started.text}")
    tid = started.json()["transaction_id"]
    with open(blob, "rb") as body:
        begun = time.perf_counter()
        answer = session.put(f"{edge.url}{TX}/{tid}/blobs/{sha256}", data=body, timeout=600)
        seconds = time.perf_counter() - begun
    if answer.status_code != 201:
        raise BenchError(f"upload refused: {answer.status_code} {answer.text}")
    session.post(f"{edge.url}{TX}/{tid}/abort", timeout=120)
    return seconds


def run(stack: contextlib.ExitStack, rounds: int) -> list[str]:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="s3-blob-")))
    blob = tmp / "big.bin"
    sha256 = write_random_file(blob, SIZE)
    server = stack.enter_context(SeaweedProcess())
    signer = Signer()
    stack.callback(signer.close)
    edge = stack.enter_context(EdgeProcess(tmp / "edge", env=s3_environment(server.info, "bench-blob/", redirect=True)))
    session = requests.Session()
    session.trust_env = False
    trusted = session.post(
        f"{edge.url}/artifactory/api/security/keys/trusted",
        json={"alias": "bench", "public_key": signer.public},
        headers={"Authorization": f"Bearer {edge.admin_token}"},
        timeout=60,
    )
    if not trusted.ok:
        raise BenchError(f"trusting the key failed: {trusted.status_code} {trusted.text}")
    edge_times, floor_times = [], []
    for number in range(rounds):
        edge_times.append(upload_once(edge, signer, blob, sha256, f"1.{number}"))
        content = Content("big.bin", SIZE, sha256, path=blob)
        floor_times.append(boto3_floor(server, f"floor-{number}/", [content], PUT_CONCURRENCY))
    edge_s, floor_s = statistics.median(edge_times), statistics.median(floor_times)
    return [
        f"200 MB blob PUT to an S3 edge: {edge_s:.2f} s (median of {rounds}; {SIZE / edge_s / 1e6:.0f} MB/s)",
        f"boto3 multipart upload of the same file: {floor_s:.2f} s",
        f"edge / boto3 time: {edge_s / floor_s:.2f}x",
        f"edge peak RSS: {vm_kib(edge.pid or 0, 'VmHWM') / 1024:.0f} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with contextlib.ExitStack() as stack:
        for line in run(stack, rounds):
            print(line)


if __name__ == "__main__":
    run_bench(main)
