"""An edge's database work for big bundles: commit, removal and garbage collection, per file.

Run by hand: ``.venv/bin/python bench/edge_store.py [--files 10000,100000]``. Builds the real
edge app in this process (``edge.app.create_app``, local storage, in a temp dir removed
afterwards) without serving HTTP, and for each size N makes a signed manifest of N files of
1-4 KiB (a real GnuPG key in a throwaway home), opens its transaction and stores the blobs
straight into the blob store (their transfer is not measured here: ``bench/files.py`` times
the whole path through real processes). Then, twice:

- **quiet**: ``Transactions.commit`` (check, publish, record) and ``Transactions.delete_bundle``
  (the removal, of which **collect** is the time spent deleting blobs) alone, for ms per file;
- **probed**: the same again with clients beside it on the same event loop, each kind in a
  loop of its own every 20 ms: a download (``ArtifactService.file`` of one of 1,000 uploaded
  files, then its first bytes), a folder listing (never cached), a 1 KiB upload into
  ``artifactory-edge-uploads`` and a transaction's status; printed as p50, p99 and worst.

The same clients with nothing else going on come first, for comparison. After the removal:
the catalog file's size, its free pages and the WAL's size. Last, the ms/file at the largest
N against the smallest N of 10,000 or more (target: within 1.10), the same ratio for bare
sqlite3 writing the same rows with the same indexes a page of 1,000 at a time and in one
transaction (the floor of paged writes: random-key indexes, sha256 and sha1, cost more per
row as they grow), and the Distribution service's status read while a bundle's N artifact
rows are read a page at a time (as a push's verification reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from common import BenchError, run_bench

from distribution.bundle_store import Bundle, BundleArtifact, BundleStore
from distribution.edges import Edge
from distribution.jobs import JobStore
from distribution.schema import distribution_migrations
from edge.app import create_app
from edge.keys import transactions_key, trusted_keys_key
from edge.settings import EdgeSettings
from edge.transactions import Started
from repository.db import Database
from repository.http import keys as core
from repository.policy import EDGE_UPLOADS_REPO
from repository.schema import catalog_migrations
from wire.manifest import Manifest, ManifestArtifact, encode

REPO = "releases-local"
PER_FOLDER = 1000
PROBE_FILES = 1000
PROBE_EVERY = 0.02
IDLE_SECONDS = 5
WRITE_GROUP = 2000
USER = "bench"
KINDS = ("download", "listing", "upload", "status")
MiB = 2**20


@dataclass
class Latencies:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, what: str, seconds: float) -> None:
        self.samples.setdefault(what, []).append(seconds * 1000)

    def line(self, what: str) -> str:
        got = sorted(self.samples.get(what, []))
        if not got:
            return f"{what:>9}: no samples"
        p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
        return f"{what:>9}: p50 {statistics.median(got):7.2f}  p99 {p99:7.2f}  max {got[-1]:7.2f} ms ({len(got)})"


def gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args], input=stdin,
                          capture_output=True, timeout=120)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


class Signer:
    """A throwaway ed25519 key in a GnuPG home of its own (short, under /tmp, for the agent's socket)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bk-", dir="/tmp"))
        gpg(self.home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", "bench", "ed25519")
        listing = gpg(self.home, "--with-colons", "--list-keys").decode()
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.public = gpg(self.home, "--armor", "--export", self.fingerprint).decode()

    def sign(self, data: bytes) -> str:
        return gpg(self.home, "--local-user", self.fingerprint, "--detach-sign", "--armor", stdin=data).decode()

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


def blobs_for(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1024, 4096)) for _ in range(count)]


def manifest_of(version: str, blobs: list[bytes]) -> Manifest:
    artifacts = [
        ManifestArtifact(
            target=f"{REPO}/app/{version}/d{i // PER_FOLDER:03d}/f{i:06d}.bin",
            source=f"src/{i}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            sha1=hashlib.sha1(data).hexdigest(),
            md5=hashlib.md5(data).hexdigest(),
        )
        for i, data in enumerate(blobs)
    ]
    return Manifest.create("bench", version, artifacts, created_by=USER)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Probe:
    """Clients beside a timed step, on the same loop: each kind in a loop of its own, so one that
    waits does not keep the others from asking."""

    def __init__(self, app: web.Application, status_tx: str) -> None:
        self.app = app
        self.status_tx = status_tx
        self.latencies = Latencies()
        self._count = 0

    async def _download(self) -> None:
        path = f"probe/{self._count % PROBE_FILES:04d}.bin"
        artifact = await self.app[core.artifacts].file(EDGE_UPLOADS_REPO, path)
        async with aclosing(await self.app[core.storage].read(artifact.sha256, 0, 1024)) as stream:
            async for _ in stream:
                break

    async def _upload(self) -> None:
        path = f"probe-up/{self._count % 50:02d}.bin"
        await self.app[core.artifacts].deploy(
            EDGE_UPLOADS_REPO, path, one_chunk(os.urandom(1024)), expected={}, declared_size=1024, user=USER
        )

    async def _listing(self) -> None:
        await self.app[core.catalog].children(EDGE_UPLOADS_REPO, "probe")

    async def _status(self) -> None:
        await self.app[transactions_key].get(self.status_tx)

    async def _loop(self, what: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await work()
            self.latencies.add(what, time.perf_counter() - started)
            self._count += 1
            await asyncio.sleep(PROBE_EVERY)

    async def run(self, stop: asyncio.Event) -> None:
        works = (self._download, self._listing, self._upload, self._status)
        await asyncio.gather(*(self._loop(what, work, stop) for what, work in zip(KINDS, works, strict=True)))


@asynccontextmanager
async def probing(app: web.Application, status_tx: str | None) -> AsyncIterator[Latencies | None]:
    if status_tx is None:
        yield None
        return
    probe = Probe(app, status_tx)
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    try:
        yield probe.latencies
    finally:
        stop.set()
        await task


def sqlite_space(path: Path) -> tuple[int, int, int]:
    """The catalog file's bytes, its free pages' bytes, and the WAL's bytes."""
    conn = sqlite3.connect(path)
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size, free, wal.stat().st_size if wal.exists() else 0


@dataclass
class Run:
    commit: float
    remove: float
    collect: float
    probes: dict[str, Latencies | None]


async def one_run(app: web.Application, signer: Signer, files: int, status_tx: str | None) -> Run:
    """Commit and remove a bundle of ``files`` files; probed when ``status_tx`` is given."""
    transactions, storage = app[transactions_key], app[core.storage]
    blobs = blobs_for(files, seed=files)
    manifest = manifest_of(f"{files}", blobs)
    data = encode(manifest)
    started = await start(app, signer, data)
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in blobs}
    after: str | None = ""
    while after is not None:
        missing, after = await transactions.missing_page(started.transaction, after)
        for i in range(0, len(missing), WRITE_GROUP):
            await storage.write_many([(s, [by_sha[s]]) for s in missing[i : i + WRITE_GROUP]])
    del by_sha, blobs
    probes: dict[str, Latencies | None] = {}
    async with probing(app, status_tx) as probes["commit"]:
        t0 = time.perf_counter()
        await transactions.commit(started.transaction.id, USER)
        commit = time.perf_counter() - t0
    collect = 0.0
    deleting = "delete_many" if hasattr(storage, "delete_many") else "delete"  # (the latter: older versions)
    delete = getattr(storage, deleting)

    async def timed_delete(*args: object) -> None:
        nonlocal collect
        t = time.perf_counter()
        try:
            await delete(*args)
        finally:
            collect += time.perf_counter() - t

    setattr(storage, deleting, timed_delete)
    try:
        async with probing(app, status_tx) as probes["remove"]:
            t0 = time.perf_counter()
            while not (await transactions.delete_bundle(manifest.name, manifest.version)).done:
                pass
            remove = time.perf_counter() - t0
    finally:
        delattr(storage, deleting)  # the class's own method again
    return Run(commit, remove, collect, probes)


async def prepare_probes(app: web.Application, signer: Signer) -> str:
    """1,000 uploaded files to download, and an open transaction whose status is read."""
    for i in range(PROBE_FILES):
        await app[core.artifacts].deploy(EDGE_UPLOADS_REPO, f"probe/{i:04d}.bin", one_chunk(os.urandom(2500)),
                                         expected={}, declared_size=2500, user=USER)  # fmt: skip
    started = await start(app, signer, encode(manifest_of("status", blobs_for(3, seed=1))))
    return started.transaction.id


async def start(app: web.Application, signer: Signer, data: bytes) -> Started:
    """Start a transaction of the manifest ``data``, as a start request's body reaches it: in a file."""
    path = await app[transactions_key].staging.scratch()
    try:
        await asyncio.to_thread(path.write_bytes, data)
        signature = await asyncio.to_thread(signer.sign, data)
        return await app[transactions_key].start(path, hashlib.sha256(data).hexdigest(), signature)
    finally:
        path.unlink()


def bare_sqlite(root: Path, rows: int, page: int) -> float:
    """Seconds for bare sqlite3 to write ``rows`` artifact-like rows with the catalog's indexes,
    ``page`` rows a transaction (WAL, synchronous=FULL, incremental vacuum)."""
    path = root / f"bare-{rows}-{page}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("auto_vacuum=INCREMENTAL", "journal_mode=WAL", "synchronous=FULL"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE a (repo, path, folder, name, sha256, sha1, md5, size, owner, PRIMARY KEY (repo, path))"
                 " WITHOUT ROWID")  # fmt: skip
    for index in ("repo, folder, name", "sha256", "sha1"):
        conn.execute(f"CREATE INDEX a_{index[:4]} ON a ({index})")
    rng = random.Random(rows)
    started = time.perf_counter()
    for first in range(0, rows, page):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO a VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            ("r", f"app/d{i // PER_FOLDER:03d}/f{i:06d}.bin", f"app/d{i // PER_FOLDER:03d}", f"f{i:06d}.bin",
             f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(160):040x}", f"{i:032x}", 2048, "bundle:b/1")
            for i in range(first, min(rows, first + page))))  # fmt: skip
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


async def service_status(files: int, root: Path) -> Latencies:
    """The Distribution service: a status read while a bundle's rows are read a page at a time."""
    db = Database(root / f"service-{files}.db")
    await db.open(catalog_migrations, distribution_migrations)
    try:
        bundles, jobs = BundleStore(db), JobStore(db)
        now = int(time.time() * 1000)
        for start in range(0, files, 1000):
            await bundles.stage("big", [
                BundleArtifact(f"{REPO}/f{i:07d}", f"src/{i}", f"{i:064x}", f"{i:040x}", f"{i:032x}", 1)
                for i in range(start, min(start + 1000, files))])  # fmt: skip
        bundle = Bundle("big", "1", "SIGNED", "", {}, "x", now, USER, now, files, files)
        await bundles.commit_staged(bundle, "big", replace=False)
        edge = Edge("edge-1", "http://127.0.0.1:9/artifactory", "", "", "", "token", "svc", now)
        dist_id, _ = await jobs.create("distribute", "big", "1", (), [edge], (files, files))
        latencies, stop = Latencies(), asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await jobs.get("big", "1", dist_id)
                latencies.add("status", time.perf_counter() - t0)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(probe())
        for _ in range(3):
            async for _page in bundles.artifact_pages("big", "1"):
                pass
        stop.set()
        await task
        return latencies
    finally:
        await db.close()


def per_file(seconds: float, files: int) -> str:
    return f"{seconds:8.2f} s {seconds * 1000 / files:7.4f} ms/file"


async def bench(sizes: list[int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-edge-store-"))
    signer = Signer()
    runner: web.AppRunner | None = None
    try:
        settings = EdgeSettings(data_dir=root / "edge", port=0, admin_token="bench-admin-token")
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await app[trusted_keys_key].trust("bench", signer.public)
        status_tx = await prepare_probes(app, signer)
        async with probing(app, status_tx) as idle:
            await asyncio.sleep(IDLE_SECONDS)
        assert idle is not None
        print(f"idle, for {IDLE_SECONDS} s (the latencies to compare with)")
        for what in KINDS:
            print(f"  {idle.line(what)}")
        quiet: dict[int, Run] = {}
        for files in sizes:
            quiet[files] = run = await one_run(app, signer, files, None)
            probed = await one_run(app, signer, files, status_tx)
            size, free, wal = sqlite_space(settings.database_path)
            print(f"\n{files:,} files")
            print(f"  commit  {per_file(run.commit, files)}")
            print(f"  remove  {per_file(run.remove, files)}   of which collect {per_file(run.collect, files)}")
            for step, latencies in probed.probes.items():
                assert latencies is not None
                for what in KINDS:
                    print(f"  during {step:<7}{latencies.line(what)}")
            space = f"catalog {size / MiB:.1f} MiB, free pages {free / MiB:.1f} MiB, WAL {wal / MiB:.1f} MiB"
            print(f"  after removal: {space}")
        base = next((n for n in sizes if n >= 10_000 and n != sizes[-1]), None)
        if base is not None:
            top = sizes[-1]
            print(f"\nms/file at {top:,} over {base:,} (target <= 1.10)")
            steps: dict[str, Callable[[Run], float]] = {
                "commit": lambda r: r.commit,
                "remove": lambda r: r.remove,
                "remove, its database work (without collect)": lambda r: r.remove - r.collect,
                "collect (the blob store's deletes)": lambda r: r.collect,
            }
            for step, seconds in steps.items():
                mine, theirs = seconds(quiet[top]) / top, seconds(quiet[base]) / base
                print(f"  {step:<60} {mine / theirs if theirs else float('nan'):.2f}")
            for page, label in ((1000, "1,000 rows a transaction"), (0, "one transaction")):
                ratio = (bare_sqlite(root, top, page or top) / top) / (bare_sqlite(root, base, page or base) / base)
                print(f"  {'bare sqlite3, the same rows and indexes, ' + label:<60} {ratio:.2f}")
        print("\nDistribution service: a status read while a bundle's rows are read a page at a time")
        for files in sizes:
            print(f"  {files:>7,} rows  {(await service_status(files, root)).line('status')}")
    finally:
        if runner is not None:
            await runner.cleanup()
        signer.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--files", default="10000,100000", help="bundle sizes, comma-separated (default 10000,100000)")
    sizes = sorted(int(s) for s in parser.parse_args().files.split(","))
    run_bench(lambda: asyncio.run(bench(sizes)))


if __name__ == "__main__":
    main()
