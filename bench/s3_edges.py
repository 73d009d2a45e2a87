"""An S3 edge against a local-disk edge and against boto3 alone, for the same bundle, in one run.

The bundle: 1,000 files of 1-4 KiB and one of 200 MB. A real SeaweedFS (``devstack/seaweed.py``)
holds the S3 edge's blobs. Each round starts a new local-disk edge and a new S3 edge (its own
key prefix), distributes the bundle to one and then the other (the order alternates by round)
and times each until the status says ``Completed``, then checks files on both by sha256.
The floor, in the same round: boto3 putting the same blobs into the same server, with the
same number of requests in flight as the edge's ``storage.write_concurrency`` and the same
part size: what any S3 client pays for these bytes, with no HTTP in front, no signature
check and no hashing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from download import start_node, write_random_file
from releases import Content, Release, check_served

from devstack.replicas import s3_environment
from devstack.seaweed import SeaweedProcess
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from repository.settings import StorageSettings

KiB, MB = 1024, 1000 * 1000
SMALL_COUNT, LARGE_SIZE = 1000, 200 * MB
PART_SIZE = 8 * 1024 * 1024  # the S3 backend's default part size
BUNDLE, VERSION = "s3bench", "1.0"
PUT_CONCURRENCY = 8


def bundle_files(tmp: Path, rng: random.Random) -> list[Content]:
    files = []
    for i in range(SMALL_COUNT):
        data = rng.randbytes(rng.randint(KiB, 4 * KiB))
        files.append(Content(f"small/{i:04d}.bin", len(data), hashlib.sha256(data).hexdigest(), data=data))
    large = tmp / "large.bin"
    files.append(Content("large.bin", LARGE_SIZE, write_random_file(large, LARGE_SIZE), path=large))
    return files


def boto3_floor(server: SeaweedProcess, prefix: str, files: list[Content], concurrency: int) -> float:
    """Seconds boto3 takes to put the same blobs: small ones one PUT each (with the SHA-256
    checksum the edge sends too), the large one as a multipart upload of the same parts, all
    through one pool of ``concurrency`` threads."""
    client = server.client(max_pool_connections=concurrency + 4)
    bucket = server.info["bucket"]

    def put(f: Content) -> None:
        checksum = base64.b64encode(bytes.fromhex(f.sha256)).decode()
        client.put_object(Bucket=bucket, Key=prefix + f.sha256, Body=f.data, ChecksumSHA256=checksum)

    def part(key: str, upload_id: str, path: Path, number: int, size: int) -> dict[str, Any]:
        offset = (number - 1) * PART_SIZE
        with open(path, "rb") as src:
            body = os.pread(src.fileno(), min(PART_SIZE, size - offset), offset)
        answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    try:
        begun = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            puts = [pool.submit(put, f) for f in files if f.data is not None]
            for f in files:
                if f.path is None:
                    continue
                key = prefix + f.sha256
                upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                count = -(-f.size // PART_SIZE)
                jobs = [pool.submit(part, key, upload_id, f.path, n, f.size) for n in range(1, count + 1)]
                parts = {"Parts": [job.result() for job in jobs]}
                client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=parts)
            for job in puts:
                job.result()
        return time.perf_counter() - begun
    finally:
        client.close()


def run(stack: contextlib.ExitStack, tmp: Path, rounds: int) -> list[str]:
    """The comparison's table, as lines to print."""
    concurrency = StorageSettings().write_concurrency
    print("S3: starting SeaweedFS and a Distribution service; writing 1,000 small files and 200 MB ...", flush=True)
    server = SeaweedProcess()
    stack.callback(server.stop)
    server.start()
    release = Release(start_node(stack, DistributionProcess(tmp / "s3-service")))
    files = bundle_files(tmp, random.Random(15))
    asyncio.run(release.deploy(BUNDLE, files, PUT_CONCURRENCY))
    release.create_signed(BUNDLE, VERSION, BUNDLE, len(files))
    samples = [*random.Random(3).sample(files[:-1], 20), files[-1]]
    times: dict[str, list[float]] = {"local": [], "s3": [], "floor": []}
    for index in range(rounds):
        edges = {
            "local": start_node(stack, EdgeProcess(tmp / f"local-{index}")),
            "s3": start_node(
                stack,
                EdgeProcess(tmp / f"s3-{index}", env=s3_environment(server.info, f"round-{index}/", redirect=True)),
            ),
        }
        names = {kind: f"{kind}-{index}" for kind in edges}
        release.register({names[kind]: edge for kind, edge in edges.items()})
        order = ["local", "s3"] if index % 2 == 0 else ["s3", "local"]
        for kind in order:
            os.sync()  # the writeback of what came before is not paid by what is timed next
            times[kind].append(release.distribute(BUNDLE, VERSION, (names[kind],)))
            print(f"  round {index + 1}: {kind} edge {times[kind][-1]:.2f} s", flush=True)
        for edge in edges.values():
            asyncio.run(check_served(f"{edge.artifactory_url}/{SOURCE_REPO}/{BUNDLE}", samples))
            edge.stop()
        times["floor"].append(boto3_floor(server, f"floor-{index}/", files, concurrency))
        print(f"  round {index + 1}: boto3 floor {times['floor'][-1]:.2f} s", flush=True)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    per_round = "; ".join(
        f"{t_local:.2f} / {t_s3:.2f} / {t_floor:.2f}"
        for t_local, t_s3, t_floor in zip(times["local"], times["s3"], times["floor"], strict=True)
    )
    return [
        f"S3 edge vs local-disk edge, {SMALL_COUNT:,} files of 1-4 KiB + one of {LARGE_SIZE // MB} MB "
        f"({rounds} rounds, medians; {concurrency} S3 writes in flight):",
        f"  local-disk edge {median['local']:6.2f} s",
        f"  S3 edge         {median['s3']:6.2f} s   S3/local {median['s3'] / median['local']:.2f} (target <= 2.00)",
        f"  boto3 floor     {median['floor']:6.2f} s   S3 edge/floor {median['s3'] / median['floor']:.2f}",
        f"  per round (local / S3 / floor): {per_round}",
    ]
