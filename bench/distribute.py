"""Distribution benchmark: push a 1 GiB Release Bundle to 3 real edges, against rsync to 3 daemons.

Run by hand (``.venv/bin/python bench/distribute.py``); it is not part of the test suite.
In a temp dir, on 127.0.0.1 and free ports only:

1. writes a 1 GiB tree of random bytes (1,000 small files of 4-64 KiB plus 4 large ones
   making up the rest), streamed, hashing as it goes;
2. starts a real ``distribution serve`` and three real ``edge serve`` processes and sets
   them up exactly as the end-to-end tests do (trust the service's key on each edge,
   issue a distributor token, register the edge), deploys the tree into ``releases-local``
   (bounded concurrent PUTs) and creates and signs bundle ``bench 1.0``;
3. times ``POST /distribution/api/v1/distribution/bench/1.0`` to all three edges until
   the status is ``Completed`` (polled every 0.05 s), then checks a sample of files on
   every edge by sha256;
4. the peer, same run: three ``rsync --daemon --no-detach`` on loopback, each with its
   own config, pid file and module in the temp dir, and ``rsync -a src/
   rsync://127.0.0.1:PORT/plain/`` to the three at once (for scale also with
   ``--fsync``, since edges fsync every blob and plain rsync does not), and the disk's
   floor: the same bytes written durably to three files at once with nothing else, no
   network and no hashing (plain rsync leaves its bytes in the page cache, to be written
   after its clock stops; an edge must have them on disk before it commits), once into one
   file per target and once with a file for each file of the tree, as an edge keeps them. Steps 3 and 4
   are repeated in ``--rounds`` rounds, each to new edges, modules and files, and the
   medians compared (bench/README.md says why);
5. version 1.1 with 1% of the bytes changed (whole small files replaced), deployed,
   signed and distributed again, printing what crossed the wire per edge, and rsync'ed
   again to the same daemons (``--stats``: "Total bytes sent");
6. version 1.2 with 1% of the bytes changed *inside* one large file: the unit of
   distribution is the file (blob), rsync's is a block, so this shows the difference.

Prints wall times per round and their medians, the ratio distribution/rsync (target <= 1.0), CPU seconds of the
processes involved, and peak RSS (VmHWM) of the service and the edges. Bounded in time
(each wait, and the whole run), and every process and temp file is removed on exit,
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import mmap
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from download import connect, peak_rss_mib, start_node, start_process

from devstack import rest, wiring
from devstack.processes import StartFailed
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess, free_port
from distribution.settings import DistributionSettings
from edge.staging import DIRECT_ALIGN, DIRECT_BUFFER, set_direct
from storage_backends.linux import has_syncfs, syncfs

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SMALL_COUNT, LARGE_COUNT = 1000, 4
SMALL_MIN, SMALL_MAX = 4 * KiB, 64 * KiB
CHANGED_FRACTION = 0.01
V1 = "/distribution/api/v1"
BUNDLE = "bench"
EVERYWHERE = [{"site_name": "*", "city_name": "*", "country_codes": ["*"]}]
SITES = [
    ("us-east-1", "us-east", "nyc", "US"),
    ("eu-central-1", "eu-central", "fra", "DE"),
    ("ap-1", "ap", "tyo", "JP"),
]
RSYNC_KINDS = ("plain", "durable")  # a module of each per round: rsync -a, rsync -a --fsync
PUT_CONCURRENCY = 8
POLL_INTERVAL = 0.05  # the wall time is known to this much; rsync's is exact
PROGRESS_EVERY = 5.0
OVERALL_TIMEOUT = 15 * 60
DISTRIBUTION_TIMEOUT = 600.0
RSYNC_TIMEOUT = 600.0
HTTP_TIMEOUT = 300.0
SAMPLE_SMALL = 20
SEED = 20240601
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class File:
    rel: str  # path inside the tree, also under releases-local/bench/{version}/ and on the edges
    path: Path
    size: int
    sha256: str


Tree = dict[str, File]


@dataclass
class Phase:
    """One timed transfer to the three targets."""

    label: str
    seconds: float
    sent: dict[str, int]  # target -> bytes that crossed the wire
    cpu: dict[str, float]  # process (group) -> CPU seconds during the phase
    machine_busy: float  # share of all CPUs busy during the phase, 0..1
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the trees


def write_random(path: Path, size: int) -> str:
    """``size`` bytes from the kernel's CSPRNG, 1 MiB at a time; answers their sha256.

    Truly random throughout (no repeated block), so rsync's rolling checksum cannot
    match anything inside a file it has not seen, and nothing compresses.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, MiB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def make_tree(root: Path, total: int, rng: random.Random) -> Tree:
    """1,000 small files (4-64 KiB, in 10 folders) and 4 large ones making the total exactly ``total``."""
    tree: Tree = {}
    sizes = [rng.randint(SMALL_MIN, SMALL_MAX) for _ in range(SMALL_COUNT)]
    for index, size in enumerate(sizes):
        rel = f"small/d{index // 100:02d}/file-{index:04d}.bin"
        tree[rel] = File(rel, root / rel, size, write_random(root / rel, size))
    rest = total - sum(sizes)
    for index in range(LARGE_COUNT):
        size = rest // LARGE_COUNT + (rest % LARGE_COUNT if index == LARGE_COUNT - 1 else 0)
        rel = f"large/big-{index}.bin"
        tree[rel] = File(rel, root / rel, size, write_random(root / rel, size))
        print(f"  {rel}: {size / MiB:.1f} MiB", flush=True)
    return tree


def link_tree(old: Tree, root: Path) -> Tree:
    """The same files under ``root`` as hard links: no bytes copied, same mtimes (rsync's quick check)."""
    tree: Tree = {}
    for rel, f in old.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(f.path, root / rel)
        tree[rel] = File(rel, root / rel, f.size, f.sha256)
    return tree


def replace_small_files(old: Tree, root: Path, rng: random.Random) -> tuple[Tree, list[str]]:
    """Version 1.1: small files picked at random get new content (same name and size) until 1% of the bytes."""
    tree = link_tree(old, root)
    budget = CHANGED_FRACTION * sum(f.size for f in old.values())
    small = sorted(rel for rel in old if rel.startswith("small/"))
    rng.shuffle(small)
    changed, nbytes = [], 0
    for rel in small:
        if nbytes >= budget:
            break
        path = root / rel
        path.unlink()  # a hard link: write a new inode, leave the old version alone
        tree[rel] = File(rel, path, old[rel].size, write_random(path, old[rel].size))
        changed.append(rel)
        nbytes += old[rel].size
    return tree, sorted(changed)


def change_inside_large_file(old: Tree, root: Path, rng: random.Random) -> tuple[Tree, str, int]:
    """Version 1.2: 1% of the bytes rewritten in the middle of one large file, everything else linked."""
    tree = link_tree(old, root)
    rel = "large/big-0.bin"
    path = root / rel
    path.unlink()
    shutil.copyfile(old[rel].path, path)
    nbytes = int(CHANGED_FRACTION * sum(f.size for f in old.values()))
    offset = old[rel].size // 2 - nbytes // 2
    with path.open("r+b") as f:
        f.seek(offset)
        left = nbytes
        while left:
            chunk = os.urandom(min(left, MiB))
            f.write(chunk)
            left -= len(chunk)
    tree[rel] = File(rel, path, old[rel].size, sha256_of(path))
    return tree, rel, nbytes


# ---------------------------------------------------------------- measuring processes


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (plus its reaped children's with ``children``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat(5))
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds of named pids (and of our own waited-for children) between start() and stop()."""

    def __init__(self, pids: dict[str, int], daemons: bool = False) -> None:
        self.pids, self.daemons = pids, daemons

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid, self.daemons) for name, pid in self.pids.items()}
        self.children_before = _children_cpu()
        self.machine_before = machine_ticks()

    def stop(self) -> tuple[dict[str, float], float]:
        after = {name: cpu_seconds(pid, self.daemons) for name, pid in self.pids.items()}
        used = {name: after[name] - self.before[name] for name in self.pids}
        children = _children_cpu() - self.children_before
        if children > 0.005:
            used["rsync clients"] = children
        busy0, total0 = self.machine_before
        busy1, total1 = machine_ticks()
        return used, (busy1 - busy0) / max(total1 - total0, 1)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- the distribution side


class Service:
    """The distribution process, its three edges, and the calls a release manager makes."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, env: dict[str, str]) -> None:
        self.stack, self.tmp = stack, tmp
        self.process = start_node(stack, DistributionProcess(tmp / "distribution", env=env))
        self.edges: dict[str, EdgeProcess] = {}
        self.retired: list[EdgeProcess] = []  # edges of earlier rounds, stopped, their data kept
        self.start_edges("")
        self.known_blobs: set[str] = set()

    def start_edges(self, suffix: str) -> None:
        for name, *_ in SITES:
            self.edges[name] = start_node(self.stack, EdgeProcess(self.tmp / f"{name}{suffix}"))

    def new_edges(self, suffix: str) -> None:
        """Three new edges in new directories, registered under the same names in place of the
        old ones, which stop with their data left where it is. A round that removed the bundle
        from the old edges instead would make them create a thousand files each right after
        deleting as many, which on ext4 without a journal (this sandbox's disk) costs ten
        times the usual, as the kernel passes over recently freed inodes; rsync's fresh
        modules and the floor's fresh files do not pay that, so neither must the edges."""
        for name, edge in self.edges.items():
            self.call("DELETE", f"{V1}/edges/{name}", expect=(200, 204))
            edge.stop()
            self.retired.append(edge)
        self.start_edges(suffix)
        self.set_up_edges()

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        status, answer = rest.request(
            method, self.process.url + path, self.process.admin_token, body, timeout=HTTP_TIMEOUT
        )
        if status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {str(answer)[:500]}")
        return answer

    def set_up_edges(self) -> None:
        """What an operator does (devstack.wiring): trust the key on each edge, a distributor token, register."""
        targets = [
            wiring.EdgeTarget(name, self.edges[name].url, self.edges[name].admin_token, site, city, country)
            for name, site, city, country in SITES
        ]
        try:
            wiring.connect(self.process.url, self.process.admin_token, targets, wiring.State(None), say=lambda _: None)
        except rest.CallFailed as exc:
            raise BenchError(f"setting up the edges failed: {exc}") from None

    async def deploy(self, version: str, tree: Tree, concurrency: int) -> tuple[int, int]:
        """PUT every file under bench/{version}/, ``concurrency`` at a time; blobs the service already
        holds go by checksum (``X-Checksum-Deploy``), the rest streamed from disk. Answers (files, bytes) sent."""
        base = f"{self.process.url}/artifactory/{SOURCE_REPO}/{BUNDLE}/{version}/"
        auth = {"Authorization": f"Bearer {self.process.admin_token}"}
        gate = asyncio.Semaphore(concurrency)
        sent = [0, 0]

        async def put(session: aiohttp.ClientSession, f: File) -> None:
            headers = {**auth, "X-Checksum-Sha256": f.sha256}
            async with gate:
                if f.sha256 in self.known_blobs:
                    async with session.put(base + f.rel, headers={**headers, "X-Checksum-Deploy": "true"}) as resp:
                        if resp.status == 201:
                            return
                with f.path.open("rb") as body:
                    headers["Content-Length"] = str(f.size)
                    async with session.put(base + f.rel, data=body, headers=headers) as resp:
                        if resp.status != 201:
                            raise BenchError(f"deploy of {f.rel}: {resp.status} {(await resp.text())[:300]}")
                sent[0] += 1
                sent[1] += f.size

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:
            await asyncio.gather(*(put(session, f) for f in tree.values()))
        self.known_blobs |= {f.sha256 for f in tree.values()}
        return sent[0], sent[1]

    def create_signed(self, version: str, count: int) -> None:
        spec = {"queries": [{"pattern": f"{SOURCE_REPO}/{BUNDLE}/{version}/**"}]}
        body = {"name": BUNDLE, "version": version, "spec": spec, "sign_immediately": True}
        answer = self.call("POST", f"{V1}/release_bundle", body, expect=(201,))
        if answer.get("artifacts_count") != count or answer.get("state") != "SIGNED":
            raise BenchError(f"bundle {version}: {answer.get('artifacts_count')} artifacts, {answer.get('state')}")

    def distribute(self, version: str, label: str, meter: CpuMeter) -> tuple[Phase, dict[str, Any]]:
        """POST the distribution to every edge; the clock stops when the status says Completed."""
        status_path = f"{V1}/release_bundle/{BUNDLE}/{version}/distribution"
        meter.start()
        started = time.perf_counter()
        answer = self.call(
            "POST", f"{V1}/distribution/{BUNDLE}/{version}", {"distribution_rules": EVERYWHERE}, expect=(202,)
        )
        dist_id = int(answer["id"])
        deadline = started + DISTRIBUTION_TIMEOUT
        finished: dict[str, float] = {}
        next_report = started + PROGRESS_EVERY
        while True:
            status = self.call("GET", f"{status_path}/{dist_id}")
            now = time.perf_counter()
            for site in status["sites"]:
                name = site["target_artifactory"]["name"]
                if site["status"] in ("Completed", "Failed") and name not in finished:
                    finished[name] = now - started
            if status["status"] in ("Completed", "Failed"):
                break
            if now > deadline:
                raise BenchError(f"distribution of {version} not done after {DISTRIBUTION_TIMEOUT:.0f} s: {status}")
            if now >= next_report:
                next_report += PROGRESS_EVERY
                print(
                    f"  {now - started:5.1f} s: "
                    + ", ".join(
                        f"{s['target_artifactory']['name']} {s['status']} "
                        f"{s['distributed_bytes'] / MiB:.0f}/{s['total_bytes'] / MiB:.0f} MiB"
                        for s in status["sites"]
                    ),
                    flush=True,
                )
            time.sleep(POLL_INTERVAL)
        seconds = time.perf_counter() - started
        cpu, busy = meter.stop()
        if status["status"] != "Completed":
            errors = {s["target_artifactory"]["name"]: s["general_error"] for s in status["sites"]}
            raise BenchError(f"distribution of {version} ended {status['status']}: {errors}")
        sites = {s["target_artifactory"]["name"]: s for s in status["sites"]}
        phase = Phase(label, seconds, {n: int(s["sent_bytes"]) for n, s in sites.items()}, cpu, busy)
        phase.notes.append("edges done at " + ", ".join(f"{n} {t:.1f} s" for n, t in sorted(finished.items())))
        phase.notes.append("sent files per edge: " + ", ".join(f"{n} {s['sent_files']}" for n, s in sites.items()))
        return phase, status

    def verify(self, version: str, samples: list[File], edge_name: str) -> None:
        """Download each sample from the edge and compare its sha256 with what was written."""
        port = self.edges[edge_name].port
        assert port is not None
        for f in samples:
            path = f"/artifactory/{SOURCE_REPO}/{BUNDLE}/{version}/{f.rel}"
            digest, size = hashlib.sha256(), 0
            with connect(port, timeout=120) as conn:
                conn.request("GET", path)
                response = conn.getresponse()
                while chunk := response.read(MiB):
                    digest.update(chunk)
                    size += len(chunk)
            if response.status != 200 or size != f.size or digest.hexdigest() != f.sha256:
                raise BenchError(f"edge {edge_name} serves {path} wrong: status {response.status}, {size} bytes")

    def pids(self) -> dict[str, int]:
        return {"service": self.process.pid, **{name: e.pid for name, e in self.edges.items()}}

    def peak_rss(self) -> dict[str, float]:
        return {name: peak_rss_mib(pid) for name, pid in self.pids().items()}


# ---------------------------------------------------------------- the peer: rsync daemons


def rsync_binary() -> str:
    found = shutil.which("rsync")
    if found is None:
        raise BenchError("rsync is not installed: apt-get install -y rsync (Debian/Ubuntu), then run again")
    return found


def rsync_modules(rounds: int) -> list[str]:
    """Fresh modules for every round, so no round copies into what an earlier one just deleted."""
    return [f"{kind}-{index}" for index in range(1, rounds + 1) for kind in RSYNC_KINDS]


def rsync_conf(root: Path, port: int, modules: list[str]) -> str:
    """One daemon, everything in the temp dir; as root, module transfers keep our uid (not nobody)."""
    ids = f"uid = {os.geteuid()}\ngid = {os.getegid()}\n"
    sections = "".join(f"[{m}]\n    path = {root / m}\n    read only = false\n" for m in modules)
    return (
        f"pid file = {root / 'rsyncd.pid'}\nlock file = {root / 'rsyncd.lock'}\nlog file = {root / 'rsyncd.log'}\n"
        f"use chroot = no\naddress = 127.0.0.1\nport = {port}\n{ids}max connections = 8\n{sections}"
    )


def rsync_env() -> dict[str, str]:
    """No RSYNC_* a developer exported (a proxy, a password, a connect program) reaches the client."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RSYNC_")}


def wait_rsyncd(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 15.0) -> None:
    """Ready once it greets with ``@RSYNCD:``; fail with the log's tail if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(64).startswith(b"@RSYNCD:"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise BenchError(f"rsync daemon on port {port} not ready (exit code {proc.poll()}); log tail:\n{tail}")


def start_rsync_daemons(
    stack: contextlib.ExitStack, tmp: Path, count: int, modules: list[str]
) -> dict[str, tuple[int, int, Path]]:
    """``count`` daemons as children (``--no-detach``): name -> (pid, port, root)."""
    binary = rsync_binary()
    daemons = {}
    for index in range(count):
        root = tmp / f"rsyncd-{index}"
        for module in modules:
            (root / module).mkdir(parents=True)
        port = free_port()
        conf = root / "rsyncd.conf"
        conf.write_text(rsync_conf(root, port, modules))
        cmd = [binary, "--daemon", "--no-detach", f"--config={conf}", f"--port={port}", "--address=127.0.0.1"]
        proc = start_process(stack, f"rsync daemon {index}", cmd, root / "stdout.log", env=rsync_env())
        wait_rsyncd(proc, port, root / "rsyncd.log")
        daemons[f"rsyncd-{index}"] = (proc.pid, port, root)
    return daemons


TOTAL_SENT = re.compile(r"^Total bytes sent:\s*([\d,.]+)", re.MULTILINE)


def rsync_all(
    src: Path, daemons: dict[str, tuple[int, int, Path]], module: str, label: str, extra: tuple[str, ...] = ()
) -> Phase:
    """``rsync -a --stats src/ rsync://127.0.0.1:PORT/module/`` to every daemon at once, timed to the last exit."""
    meter = CpuMeter({name: pid for name, (pid, _, _) in daemons.items()}, daemons=True)
    procs = {}
    meter.start()
    started = time.perf_counter()
    for name, (_, port, root) in daemons.items():
        cmd = [rsync_binary(), "-a", "--stats", *extra, f"{src}/", f"rsync://127.0.0.1:{port}/{module}/"]
        out = (root / f"client-{label.split()[0]}-{module}.log").open("w+b")
        procs[name] = (
            subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=rsync_env()),
            out,
        )
    try:
        deadline = started + RSYNC_TIMEOUT
        for name, (proc, _) in procs.items():
            try:
                proc.wait(timeout=max(deadline - time.perf_counter(), 0.1))
            except subprocess.TimeoutExpired:
                raise BenchError(f"rsync to {name} did not finish within {RSYNC_TIMEOUT:.0f} s") from None
        seconds = time.perf_counter() - started
        time.sleep(0.3)  # let the daemons reap their per-connection children, so their CPU counts
        cpu, busy = meter.stop()
        sent = {}
        for name, (proc, out) in procs.items():
            out.seek(0)
            text = out.read().decode(errors="replace")
            match = TOTAL_SENT.search(text)
            if proc.returncode != 0 or match is None:
                raise BenchError(f"rsync to {name} failed ({proc.returncode}):\n{text[-2000:]}")
            sent[name] = int(re.sub(r"[,.]", "", match.group(1)))
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    return Phase(label, seconds, sent, cpu, busy)


class DirectWriter:
    """One page-aligned buffer of the edges' size, reused for every file a floor thread writes,
    so the floor sends the disk the same requests an edge does."""

    def __init__(self) -> None:
        self.buffer = mmap.mmap(-1, DIRECT_BUFFER)
        self.view = memoryview(self.buffer)
        self.filled = 0

    def copy(self, source: Path, fd: int) -> int:
        """Append ``source`` to the buffer, writing it whenever it fills."""
        written = 0
        with open(source, "rb") as src:
            while n := src.readinto(self.view[self.filled :]):
                self.filled += n
                if self.filled == DIRECT_BUFFER:
                    written += os.write(fd, self.view)
                    self.filled = 0
        return written

    def flush(self, fd: int, direct: bool) -> int:
        """Write what the buffer holds: its whole blocks directly, a tail through the page cache."""
        aligned = self.filled - self.filled % DIRECT_ALIGN if direct else self.filled
        written = os.write(fd, self.view[:aligned]) if aligned else 0
        if aligned < self.filled:
            set_direct(fd, False)
            written += os.write(fd, self.view[aligned : self.filled])
        self.filled = 0
        return written

    def close(self) -> None:
        self.view.release()
        self.buffer.close()


def disk_floor(tree: Tree, root: Path, targets: int, *, per_file: bool) -> Phase:
    """The same bytes written durably and nothing else, to ``targets`` targets at once, a thread
    each, with direct I/O in the edges' buffer size. No network, no hashing. ``per_file=False``:
    the whole tree into one file per target, one fsync: what this disk needs to take the bytes
    durably, the floor under any copy that is durable when it reports done. ``per_file=True``:
    every file of the tree as a file of its own (the large ones direct, the small ones through
    the page cache, as an edge stores them), then one syncfs per target: the floor under a
    durable copy that keeps a file per blob, which pays the disk for each new file."""
    root.mkdir()
    meter = CpuMeter({"writers (this process)": os.getpid()})

    def one_file(target: Path) -> int:
        writer = DirectWriter()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            direct = set_direct(fd, True)
            written = sum(writer.copy(f.path, fd) for f in tree.values()) + writer.flush(fd, direct)
            os.fsync(fd)
        finally:
            os.close(fd)
            writer.close()
        return written

    def file_each(target: Path) -> int:
        writer = DirectWriter()
        target.mkdir()
        written = 0
        try:
            for i, f in enumerate(tree.values()):
                fd = os.open(target / f"{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                try:
                    direct = f.size >= DIRECT_BUFFER and set_direct(fd, True)
                    written += writer.copy(f.path, fd) + writer.flush(fd, direct)
                finally:
                    os.close(fd)
            if has_syncfs():
                syncfs(target)
            else:
                os.sync()
        finally:
            writer.close()
        return written

    meter.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(targets) as pool:
        written = list(pool.map(file_each if per_file else one_file, [root / f"target-{i}" for i in range(targets)]))
    seconds = time.perf_counter() - started
    cpu, busy = meter.stop()
    name, what = (
        ("file floor", "every file as a file, one syncfs each")
        if per_file
        else ("disk floor", "one file each, fsynced")
    )
    label = f"{name}: the same bytes to {targets} targets at once, direct I/O, {what} (no network, no hashing)"
    return Phase(label, seconds, {f"target-{i}": n for i, n in enumerate(written)}, cpu, busy)


def verify_rsync_copies(daemons: dict[str, tuple[int, int, Path]], module: str, samples: list[File]) -> None:
    for name, (_, _, root) in daemons.items():
        for f in samples:
            copy = root / module / f.rel
            if not copy.is_file() or copy.stat().st_size != f.size or sha256_of(copy) != f.sha256:
                raise BenchError(f"{name} holds {module}/{f.rel} wrong")


# ---------------------------------------------------------------- report


def describe(phase: Phase) -> list[str]:
    per_target = sorted(set(phase.sent.values()))
    sent = f"{per_target[0]:,} B" if len(per_target) == 1 else ", ".join(f"{n} {b:,} B" for n, b in phase.sent.items())
    cpu = ", ".join(f"{n} {s:.1f}" for n, s in phase.cpu.items())
    rate = sum(phase.sent.values()) / phase.seconds / 1e6
    lines = [
        f"{phase.label}",
        f"    wall {phase.seconds:8.2f} s   sent per target {sent}   ({rate:,.0f} MB/s over all 3)",
        f"    CPU s: {cpu}   (whole machine {phase.machine_busy * 100:.0f}% busy of {os.cpu_count()} CPUs)",
    ]
    return lines + [f"    {note}" for note in phase.notes]


def ratio(a: Phase, b: Phase) -> str:
    return f"{a.seconds / b.seconds:.2f}" if b.seconds else "-"


@dataclass
class Round:
    """One turn of the five copies of version 1.0, one after the other."""

    distribution: Phase
    rsync: Phase
    rsync_fsync: Phase
    floor: Phase
    file_floor: Phase

    def phases(self) -> tuple[Phase, ...]:
        return self.distribution, self.rsync, self.rsync_fsync, self.floor, self.file_floor


LABELS = ("distribution", "rsync -a", "rsync -a --fsync", "disk floor", "file floor")


def report_rounds(rounds: list[Round]) -> list[str]:
    """Each copy's wall time in every round and the median; the ratios per round (copies next to
    each other in time) and of the medians; and, in full, the round whose distribution is the median."""
    middle = sorted(rounds, key=lambda r: r.distribution.seconds)[(len(rounds) - 1) // 2]
    lines = [line for phase in middle.phases() for line in describe(phase)]
    lines.insert(0, f"the median round of {len(rounds)} (by the distribution's wall time):")
    medians = [statistics.median(r.phases()[i].seconds for r in rounds) for i in range(len(LABELS))]
    lines.append(f"\nwall seconds per round ({len(rounds)}), and the median:")
    for i, label in enumerate(LABELS):
        per_round = " ".join(f"{r.phases()[i].seconds:6.2f}" for r in rounds)
        lines.append(f"    {label:18s} {per_round}   median {medians[i]:6.2f}")
    for i, label in enumerate(LABELS[1:], start=1):
        per_round = " ".join(ratio(r.distribution, r.phases()[i]) for r in rounds)
        target = "   (target <= 1.00)" if i == 1 else ""
        lines.append(
            f"ratio distribution/{label} (1.0, wall): {medians[0] / medians[i]:.2f} of the medians;"
            f" per round {per_round}{target}"
        )
    for i, label in ((3, "disk floor"), (4, "file floor")):
        per_round = " ".join(ratio(r.phases()[i], r.rsync) for r in rounds)
        lines.append(
            f"ratio {label}/rsync (the least a copy that is on disk when it is done can take, against"
            f" rsync -a, whose bytes are not): {medians[i] / medians[1]:.2f} of the medians; per round {per_round}"
        )
    return lines


def samples_of(tree: Tree, rng: random.Random, must: tuple[str, ...] | list[str] = ()) -> list[list[File]]:
    """Per edge: SAMPLE_SMALL small files, a large one (a different one per edge), and every ``must``."""
    small = [f for rel, f in sorted(tree.items()) if rel.startswith("small/")]
    large = [f for rel, f in sorted(tree.items()) if rel.startswith("large/")]
    extra = [tree[rel] for rel in must]
    return [rng.sample(small, SAMPLE_SMALL) + [large[i % len(large)]] + extra for i in range(len(SITES))]


# ---------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    env = {"DISTRIBUTION_MAX_PARALLEL_BLOBS": str(args.parallel_blobs)} if args.parallel_blobs else {}
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="dist-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        rsync_binary()
        total = int(args.gib * GiB)
        # the tree and the service's copy, then per round 3 edges, 3 + 3 rsync copies and 3 + 3 floor copies
        need = total * (2 + 15 * args.rounds + 2)
        if (free := shutil.disk_usage(tmp).free) < need:
            raise BenchError(
                f"{tmp} has {free / GiB:.1f} GiB free; this run keeps {need / GiB:.1f} GiB until it ends"
                " (nothing is deleted between rounds): use fewer --rounds or a smaller --gib"
            )
        print(f"temp dir {tmp}; {os.cpu_count()} CPUs; writing {total / GiB:g} GiB of random files ...", flush=True)
        t0 = time.perf_counter()
        v10 = make_tree(tmp / "src-1.0", total, rng)
        print(f"  {len(v10)} files, {sum(f.size for f in v10.values()):,} bytes in {time.perf_counter() - t0:.1f} s")

        print("starting distribution serve, 3 edges and 3 rsync daemons on 127.0.0.1 ...", flush=True)
        service = Service(stack, tmp, env)
        service.set_up_edges()
        daemons = start_rsync_daemons(stack, tmp, len(SITES), rsync_modules(args.rounds))

        t0 = time.perf_counter()
        files, nbytes = asyncio.run(service.deploy("1.0", v10, PUT_CONCURRENCY))
        t1 = time.perf_counter()
        service.create_signed("1.0", len(v10))
        print(
            f"  deployed {files} files ({nbytes / MiB:.0f} MiB) into {SOURCE_REPO} in {t1 - t0:.1f} s "
            f"({PUT_CONCURRENCY} PUTs in flight); created + signed {BUNDLE} 1.0 in {time.perf_counter() - t1:.1f} s"
        )

        # ---- 1.0: the whole GiB, in rounds: each copy in turn, so that drift of this shared
        # machine's disk and CPUs over the run falls on all of them alike; every round copies to
        # new targets (new edges, new modules, new files), and nothing is deleted until the end
        rounds: list[Round] = []
        for index in range(1, args.rounds + 1):
            if index > 1:
                service.new_edges(f"-round{index}")
            os.sync()  # writes of the set-up must not be flushed on the clock of what follows
            print(f"round {index} of {args.rounds}: distributing {BUNDLE} 1.0 to 3 edges ...", flush=True)
            d10, _ = service.distribute("1.0", "distribution 1.0 (whole bundle)", CpuMeter(service.pids()))
            if min(d10.sent.values()) != total:
                raise BenchError(f"round {index}: an edge was sent {min(d10.sent.values()):,} bytes, not {total:,}")
            for samples, name in zip(samples_of(v10, rng), service.edges, strict=True):
                service.verify("1.0", samples, name)
            os.sync()
            print(f"round {index}: rsync -a of the same tree to 3 daemons ...", flush=True)
            r10 = rsync_all(tmp / "src-1.0", daemons, f"plain-{index}", "rsync -a (whole tree)")
            verify_rsync_copies(daemons, f"plain-{index}", samples_of(v10, rng)[0])
            os.sync()
            print(f"round {index}: rsync -a --fsync of the same tree ...", flush=True)
            r10f = rsync_all(
                tmp / "src-1.0", daemons, f"durable-{index}", "rsync -a --fsync (whole tree, for scale)", ("--fsync",)
            )
            os.sync()
            print(f"round {index}: writing the same bytes durably with nothing else, for the disk's floor ...")
            floor = disk_floor(v10, tmp / f"floor-{index}", len(SITES), per_file=False)
            os.sync()
            print(f"round {index}: the same, a file per file, for the floor of a copy that keeps files ...")
            file_floor = disk_floor(v10, tmp / f"file-floor-{index}", len(SITES), per_file=True)
            rounds.append(Round(d10, r10, r10f, floor, file_floor))
        plain = f"plain-{args.rounds}"  # holds 1.0, for the rsyncs of 1.1 and 1.2
        dist_meter = CpuMeter(service.pids())

        # ---- 1.1: 1% of the bytes changed, as whole small files
        v11, changed = replace_small_files(v10, tmp / "src-1.1", rng)
        changed_bytes = sum(v11[rel].size for rel in changed)
        files, nbytes = asyncio.run(service.deploy("1.1", v11, PUT_CONCURRENCY))
        service.create_signed("1.1", len(v11))
        os.sync()
        print(
            f"distributing {BUNDLE} 1.1 ({len(changed)} small files replaced, {changed_bytes:,} bytes) ...", flush=True
        )
        d11, _ = service.distribute("1.1", f"distribution 1.1 ({len(changed)} files changed)", dist_meter)
        for samples, name in zip(samples_of(v11, rng, changed[:10]), service.edges, strict=True):
            service.verify("1.1", samples, name)
        os.sync()
        r11 = rsync_all(tmp / "src-1.1", daemons, plain, f"rsync -a (1.1 over 1.0, {len(changed)} files changed)")
        verify_rsync_copies(daemons, plain, [v11[rel] for rel in changed[:10]])

        # ---- 1.2: 1% of the bytes changed inside one large file
        r12 = d12 = None
        if not args.skip_in_file:
            v12, big, in_file = change_inside_large_file(v11, tmp / "src-1.2", rng)
            asyncio.run(service.deploy("1.2", v12, PUT_CONCURRENCY))
            service.create_signed("1.2", len(v12))
            os.sync()
            print(f"distributing {BUNDLE} 1.2 ({in_file:,} bytes changed inside {big}) ...", flush=True)
            d12, _ = service.distribute(
                "1.2", f"distribution 1.2 ({in_file / MiB:.1f} MiB changed inside {big})", dist_meter
            )
            for samples, name in zip(samples_of(v12, rng, [big]), service.edges, strict=True):
                service.verify("1.2", samples, name)
            os.sync()
            r12 = rsync_all(tmp / "src-1.2", daemons, plain, "rsync -a (1.2 over 1.1, delta inside the file)")
            verify_rsync_copies(daemons, plain, [v12[big]])

        rss = service.peak_rss()
        logs = {name: e.log_tail(5) for name, e in [("distribution", service.process), *service.edges.items()]}

        print("\n" + "=" * 100)
        print(
            f"bundle: {len(v10)} files, {total:,} bytes ({SMALL_COUNT} small of 4-64 KiB, {LARGE_COUNT} large); "
            f"3 targets on loopback; {os.cpu_count()} CPUs shared by everything"
        )
        defaults = DistributionSettings()
        blobs = args.parallel_blobs or f"default ({defaults.max_parallel_blobs})"
        print(f"service: max_parallel_blobs {blobs}, max_parallel_edges default ({defaults.max_parallel_edges})")
        print("-" * 100)
        print("\n".join(report_rounds(rounds)))
        print("-" * 100)
        print(
            f"1.1: {len(changed)} of {len(v10)} files replaced, {changed_bytes:,} bytes "
            f"({changed_bytes / total * 100:.2f}% of the bundle)"
        )
        for phase in (d11, r11):
            print("\n".join(describe(phase)))
        print(f"ratio distribution/rsync (1.1, wall): {ratio(d11, r11)}")
        if d12 and r12:
            print("-" * 100)
            for phase in (d12, r12):
                print("\n".join(describe(phase)))
            print(
                f"ratio distribution/rsync (1.2, wall): {ratio(d12, r12)}; bytes sent per target "
                f"{min(d12.sent.values()) / max(min(r12.sent.values()), 1):.1f}x rsync's"
            )
        print("-" * 100)
        print("peak RSS (VmHWM): " + ", ".join(f"{n} {v:.1f} MiB" for n, v in rss.items()))
        print(
            "notes: edges verify the signature, hash every byte and fsync every blob and the catalog; "
            "plain rsync -a does neither\n(its own transfer checksums only, no signing, no fsync); "
            "sent bytes for distribution are blob bytes (the status's sent_bytes), for rsync --stats "
            "'Total bytes sent'."
        )
        if args.verbose:
            for name, tail in logs.items():
                print(f"--- {name} log tail:\n{tail}")
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for proc in (service.process, *service.retired, *service.edges.values()):
                shutil.copy(proc.log_path, args.keep_logs / f"{proc.base_dir.name}.log")
            print(f"logs of the service and the edges copied to {args.keep_logs}")
    print(f"\ntotal wall time: {time.monotonic() - started:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the bundle in GiB [1]")
    parser.add_argument(
        "--parallel-blobs",
        type=int,
        default=0,
        help="the service's max_parallel_blobs (default: the service's own default)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of the whole-bundle copies (each copy once a turn) [3]"
    )
    parser.add_argument("--skip-in-file", action="store_true", help="skip version 1.2 (1%% changed inside one file)")
    parser.add_argument("--verbose", action="store_true", help="print the tails of the service's and edges' logs")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the service's and edges' logs into DIR")
    args = parser.parse_args()
    if not 0.1 <= args.gib <= 8 or not 0 <= args.parallel_blobs <= 256 or not 1 <= args.rounds <= 9:
        parser.error("--gib 0.1..8, --parallel-blobs 0..256, --rounds 1..9")
    run_bench(lambda: run(args), failures=(StartFailed,), overall_timeout=OVERALL_TIMEOUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
