"""Bundles of many small files: what each step costs per file, memory, and who waits meanwhile.

Run by hand (``.venv/bin/python bench/files.py``); it is not part of the test suite. For each
file count (``--files``, by default 1,000, 10,000 and 100,000), in a temp dir, on 127.0.0.1
and free ports only, with processes of its own (devstack/services.py):

1. starts a Distribution service and two local-disk edges, wired as an operator wires them;
2. deploys that many files of 1-4 KiB (random bytes, 8 PUTs in flight) into ``releases-local``,
   creates and signs a bundle of them;
3. with a latency probe running beside it (bench/probe.py: downloads and uploads on an edge,
   status reads on the service), distributes the bundle to both edges, checks files on both,
   deletes it from both (``POST .../delete``, the bundle kept on the service) and waits until
   the edges' blob stores no longer hold its blobs (the garbage collection);
4. reads the peak resident memory (VmHWM) of the service and each edge, and their resident
   memory a few seconds later (VmRSS).

Then the same bundle-shaped comparison on S3 (bench/s3_edges.py): an S3 edge, a local-disk
edge and boto3 alone, for 1,000 files of 1-4 KiB and one of 200 MB.

Prints, per file count: deploy files/s; create+sign, distribute, undistribute and collect times
with ms per file and the ratio of ms per file to the 10,000-file run (target <= 1.10 at
100,000); the p99 latency of each kind of probe call per phase (target < 50 ms); memory per
process and its growth over the 1,000-file run (target <= 60 MiB). Bounded in time (each wait,
and the whole run: ``OVERALL_TIMEOUT``); every process and file is removed on exit, error or
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import s3_edges
from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from download import start_node
from probe import KINDS, Probe, Target
from releases import V1, Content, Release, check_served, vm_kib

from devstack.processes import StartFailed
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from wire.manifest import MAX_ARTIFACTS

KiB = 1024
SIZES = (1000, 10_000, 100_000)
REFERENCE = 10_000  # ms per file at each size is compared with this run's
PUT_CONCURRENCY = 8
IDLE_SECONDS = 3.0  # probe calls before the push, and after the collection
STEP_TIMEOUT = 1800.0  # longest wait for one step's status or collection
OVERALL_TIMEOUT = 3 * 3600
STEPS = ("create+sign", "distribute", "undistribute", "collect")
PHASES = ("idle", "distribute", "undistribute", "collect")
SAMPLES = 30
MEMORY_GROWTH_MIB = 60
P99_TARGET_MS = 50.0
PER_FILE_TARGET = 1.10


@dataclass
class SizeRun:
    files: int
    deploy_per_s: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    p99: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)  # phase -> kind -> (ms, calls)
    peak_mib: dict[str, float] = field(default_factory=dict)
    after_mib: dict[str, float] = field(default_factory=dict)

    def ms_per_file(self, step: str) -> float:
        return self.seconds[step] * 1000 / self.files


def small_files(count: int, seed: int, keep: set[int]) -> tuple[Iterator[Content], list[Content], list[str]]:
    """``count`` files of 1-4 KiB made as they are deployed (never all in memory); the ones at
    ``keep`` are kept to be checked on the edges, and every file's sha256 is kept."""
    rng = random.Random(seed)
    kept: list[Content] = []
    digests: list[str] = []

    def made() -> Iterator[Content]:
        for i in range(count):
            data = rng.randbytes(rng.randint(KiB, 4 * KiB))
            f = Content(f"d{i // 1000:03d}/{i:06d}.bin", len(data), hashlib.sha256(data).hexdigest(), data=data)
            digests.append(f.sha256)
            if i in keep:
                kept.append(f)
            yield f

    return made(), kept, digests


def wait_collected(edges: dict[str, EdgeProcess], digests: list[str], timeout: float) -> None:
    """Until no edge's blob directory holds any of these blobs (local-disk edges)."""
    deadline = time.monotonic() + timeout
    for edge in edges.values():
        blobs = edge.data_dir / "blobs" / "blobs"
        remaining = list(digests)
        while remaining:
            remaining = [s for s in remaining if (blobs / s[:2] / s).exists()]  # only the ones left are looked at
            if remaining and time.monotonic() > deadline:
                raise BenchError(
                    f"{len(remaining)} blobs of the bundle still on {edge.base_dir.name} after {timeout} s"
                )
            if remaining:
                time.sleep(0.2)


def run_size(tmp: Path, count: int) -> SizeRun:
    result = SizeRun(count)
    name, version = "files", str(count)
    with contextlib.ExitStack() as stack:
        limit = {"DISTRIBUTION_MAX_BUNDLE_ARTIFACTS": str(MAX_ARTIFACTS)}
        service = start_node(stack, DistributionProcess(tmp / "service", env=limit))
        edges = {f"edge-{i}": start_node(stack, EdgeProcess(tmp / f"edge-{i}")) for i in (1, 2)}
        release = Release(service)
        release.register(edges)

        keep = set(random.Random(count).sample(range(count), min(SAMPLES, count)))
        files, samples, digests = small_files(count, count, keep)
        begun = time.perf_counter()
        asyncio.run(release.deploy(name, files, PUT_CONCURRENCY))
        result.deploy_per_s = count / (time.perf_counter() - begun)
        print(f"  deployed {count:,} files: {result.deploy_per_s:,.0f} files/s", flush=True)
        begun = time.perf_counter()
        release.create_signed(name, version, name, count)
        result.seconds["create+sign"] = time.perf_counter() - begun

        edge = edges["edge-1"]
        status_path = f"{V1}/release_bundle/{name}/{version}/distribution"
        probe = Probe(Target(edge.port or 0, edge.admin_token, service.port or 0, service.admin_token, status_path))
        probe.seed()
        probe.start()
        try:
            time.sleep(IDLE_SECONDS)
            probe.phase = "distribute"
            result.seconds["distribute"] = release.distribute(name, version, timeout=STEP_TIMEOUT)
            for e in edges.values():
                asyncio.run(check_served(f"{e.artifactory_url}/{SOURCE_REPO}/{name}", samples))
            probe.phase = "undistribute"
            result.seconds["undistribute"] = release.undistribute(name, version, timeout=STEP_TIMEOUT)
            probe.phase = "collect"
            begun = time.perf_counter()
            wait_collected(edges, digests, STEP_TIMEOUT)
            result.seconds["collect"] = time.perf_counter() - begun
            probe.phase = "after"
            time.sleep(IDLE_SECONDS)
        finally:
            probe.stop()
        result.p99 = {phase: probe.p99(phase) for phase in PHASES}
        for proc, pid in release.pids().items():
            result.peak_mib[proc] = vm_kib(pid, "VmHWM") / KiB
            result.after_mib[proc] = vm_kib(pid, "VmRSS") / KiB
    steps = ", ".join(f"{step} {result.seconds[step]:.1f} s" for step in STEPS)
    print(f"  {steps}", flush=True)
    return result


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else "-"


def report(runs: list[SizeRun]) -> list[str]:
    reference = next((r for r in runs if r.files == REFERENCE), None)
    base = next((r for r in runs if r.files == min(x.files for x in runs)), runs[0])
    lines = ["files      deploy/s  " + "  ".join(f"{step:>26}" for step in STEPS)]
    for r in runs:
        cells = []
        for step in STEPS:
            vs = f" x{ratio(r.ms_per_file(step), reference.ms_per_file(step))}" if reference else ""
            cells.append(f"{r.seconds[step]:8.1f} s {r.ms_per_file(step):6.3f} ms/f{vs:>6}")
        lines.append(f"{r.files:>7,}  {r.deploy_per_s:9,.0f}  " + "  ".join(f"{c:>26}" for c in cells))
    if reference:
        lines.append(f"(x: ms per file over the {REFERENCE:,}-file run's; target <= {PER_FILE_TARGET:.2f})")
    lines.append("")
    lines.append(f"p99 latency of the probe's calls, ms (calls made), per phase; target < {P99_TARGET_MS:.0f} ms")
    lines.append("files    phase          " + "  ".join(f"{kind:>16}" for kind in KINDS))
    for r in runs:
        for phase in PHASES:
            cells = [f"{r.p99[phase][kind][0]:8.1f} ({r.p99[phase][kind][1]:>5})" for kind in KINDS]
            lines.append(f"{r.files:>7,}  {phase:<13} " + "  ".join(f"{c:>16}" for c in cells))
    lines.append("")
    lines.append(f"memory, MiB: peak (VmHWM) / resident after (VmRSS); + growth over {base.files:,} files' peak")
    for r in runs:
        cells = [
            f"{proc} {r.peak_mib[proc]:.0f}/{r.after_mib[proc]:.0f} (+{r.peak_mib[proc] - base.peak_mib[proc]:.0f})"
            for proc in r.peak_mib
        ]
        lines.append(f"{r.files:>7,}  " + ", ".join(cells))
    lines.append(f"(target: peak growth <= {MEMORY_GROWTH_MIB} MiB, and resident after back near the smallest run's)")
    return lines


def run(args: argparse.Namespace) -> None:
    started_at = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="files-bench-"))
        if args.keep_failed:
            stack.push(functools.partial(_remove_unless_failed, tmp))
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        print(f"temp dir {tmp}; {os.cpu_count()} CPUs; file counts {', '.join(f'{n:,}' for n in args.files)}")
        runs = []
        for count in args.files:
            print(f"{count:,} files:", flush=True)
            runs.append(run_size(tmp / f"n{count}", count))
            shutil.rmtree(tmp / f"n{count}", ignore_errors=True)  # reached only when that size went well
        s3_lines = [] if args.skip_s3 else s3_edges.run(stack, tmp / "s3", args.s3_rounds)
        print("\n" + "=" * 100)
        print("\n".join(report(runs)))
        if s3_lines:
            print("-" * 100)
            print("\n".join(s3_lines))
    print(f"\ntotal wall time: {time.monotonic() - started_at:.0f} s")


def _remove_unless_failed(tmp: Path, exc_type: type[BaseException] | None, *_: object) -> bool:
    """Keep the temp dir, with every process's log, when the run failed: the logs say why."""
    if exc_type is None:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp} with the processes' logs (*.log) for a look", file=sys.stderr)
    return False


def file_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or not all(1 <= n <= MAX_ARTIFACTS for n in counts):
        raise argparse.ArgumentTypeError(f"file counts 1 to {MAX_ARTIFACTS}, comma-separated")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=file_counts, default=list(SIZES), help="file counts [1000,10000,100000]")
    parser.add_argument("--quick", action="store_true", help="1,000 files and one S3 round only")
    parser.add_argument("--keep-failed", action="store_true", help="keep the temp dir and logs of a failed run")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the S3 comparison")
    parser.add_argument("--s3-rounds", type=int, default=3, help="rounds of the S3 comparison [3]")
    args = parser.parse_args()
    if args.quick:
        args.files, args.s3_rounds = [1000], 1
    if not 1 <= args.s3_rounds <= 9:
        parser.error("--s3-rounds 1..9")
    run_bench(lambda: run(args), failures=(StartFailed,), overall_timeout=OVERALL_TIMEOUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
