"""Download benchmark: a real edge process against a real nginx, measured in the same run.

Run by hand (``python bench/download.py`` or ``make bench``); it is not part of the
test suite. Absolute numbers depend on the machine, so the script prints ratios
against peers measured moments before on the same box. The edge is measured twice:

- directly (it sends the bytes itself, by sendfile or from memory);
- through nginx running the shipped ``nginx/edge.conf`` (one worker, on the edge's
  core): the edge decides and answers ``X-Accel-Redirect``, nginx sends the file;

and, for small files, the edge again with 1 and N worker processes (``edge serve --workers``,
N one per core by default), neither pinned: what every core adds. On a machine with few
cores the load generator shares them with the workers.

The peers are:

- nginx serving the same bytes from disk with sendfile (the practical ceiling for
  a static file server; one worker, as the edge is one process);
- for small files, a bare aiohttp app answering a fixed in-memory body (the
  ceiling for anything built on aiohttp: what the edge's own code costs per request).

Everything listens on 127.0.0.1 only, every load is bounded in time, and every
process and temp file is removed on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path

from devstack.nginx import NginxError, NginxProcess, find_nginx, main_config
from devstack.processes import ServiceProcess, StartFailed
from devstack.services import EdgeProcess, free_port
from edge.settings import EdgeSettings, one_per_core
from repository.serve import loop_factory
from repository.settings import EVENT_LOOPS

KiB, MiB, GiB = 1024, 1024**2, 1024**3
UPLOADS_REPO = "artifactory-edge-uploads"
TOKEN = "bench-admin-token-" + os.urandom(6).hex()
SIZES = {"4 KiB": 4 * KiB, "1 GiB": 1 * GiB}
SMALL_CONNECTIONS, SMALL_SECONDS = 32, 10
LARGE_SECONDS = 10
READ_BUFFER = 4 * MiB
WARMUP_SECONDS = 2
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
Node = TypeVar("Node", bound=EdgeProcess)
SERVER_CPU = "0"  # every server gets this core; load generators get the others
ACCEL_PREFIX = "/_blobs/"  # the edge's accel_redirect, the internal location of nginx/edge.conf


@dataclass(frozen=True)
class Latency:
    """Per-request latency of a wrk run, in milliseconds (wrk measures completed requests only)."""

    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class Result:
    """What one bounded load run achieved against one URL."""

    requests: int
    nbytes: int
    seconds: float
    errors: int
    cpu_seconds: float = 0.0  # what the server process used meanwhile, where it was measured
    latency: Latency | None = None  # where the load generator measured it (wrk)
    failures: dict[str, int] = dataclasses.field(default_factory=dict)  # the errors by kind, where wrk told

    def describe_failures(self) -> str:
        """``3 (read 2, status 1)``: the errors and what they were, as far as the load generator knows."""
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.failures.items() if count)
        return f"{self.errors} ({kinds})" if kinds else str(self.errors)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass(frozen=True)
class Sample:
    """One file as the benchmark knows it: where it lives locally and its digest."""

    name: str
    path: Path
    size: int
    sha256: str


# ---------------------------------------------------------------- files


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random-looking bytes, streamed, and return their sha256.

    One random 1 MiB block is reused with a counter stamped into each copy: fast
    (no 1 GiB of urandom), never in memory, and no two blocks are equal, so no
    layer can dedupe or compress its way to a better number.
    """
    block = bytearray(os.urandom(min(size, MiB)))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index, offset in enumerate(range(0, size, len(block))):
            block[:8] = index.to_bytes(8, "little")
            chunk = memoryview(block)[: size - offset]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def make_samples(www: Path, *, small_only: bool = False, sizes: dict[str, int] = SIZES) -> list[Sample]:
    """The files nginx serves from ``www`` and the edge gets uploaded, the small one first."""
    samples = []
    for label, size in sizes.items():
        if small_only and size > MiB:
            continue
        path = www / f"sample-{size}.bin"
        samples.append(Sample(label, path, size, write_random_file(path, size)))
    return samples


# ---------------------------------------------------------------- processes


def can_pin() -> bool:
    """Pinning needs a second core and ``taskset``; without them, everything shares."""
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def client_cpus() -> str:
    return f"1-{(os.cpu_count() or 2) - 1}"


def pin_prefix(cpus: str) -> list[str]:
    """``taskset`` in front of a command, so server and load generator don't fight for a core."""
    return ["taskset", "-c", cpus] if can_pin() else []


def pin_self_to_client_cpus() -> None:
    """The in-process Python clients run here: keep them off the servers' core too."""
    if can_pin():
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))


class PinnedEdge(EdgeProcess):
    """An edge process (the one the end-to-end tests run), on the servers' core when the machine can pin."""

    def command(self, port: int) -> list[str]:
        return [*pin_prefix(SERVER_CPU), *super().command(port)]


def start_process(
    stack: contextlib.ExitStack, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> ServiceProcess:
    """Start a child whose output goes to a log file (a full pipe would stall it); the stack stops it,
    with SIGTERM, then SIGKILL if it has not gone within ``STOP_TIMEOUT``: cleanup must never hang."""
    child = ServiceProcess(name, cmd, os.environ if env is None else env, log, log.parent)
    child.start()
    stack.callback(stop_process, child)
    return child


def stop_process(child: ServiceProcess) -> None:
    child.terminate()
    child.wait_stopped(time.monotonic() + STOP_TIMEOUT)


def wait_ready(child: ServiceProcess, port: int, path: str) -> None:
    """Ready once ``path`` answers 200; fail with the log's tail if the process dies or stalls."""
    child.url, child.probe, child.expect = f"http://127.0.0.1:{port}", path, None
    try:
        child.wait_ready(READY_TIMEOUT)
    except StartFailed as exc:
        raise BenchError(str(exc)) from None


def start_node(stack: contextlib.ExitStack, node: Node) -> Node:
    """An edge or a Distribution service (devstack.services), stopped by the stack."""
    stack.callback(node.stop)
    try:
        node.start()
    except StartFailed as exc:
        raise BenchError(f"{node.program} did not start: {exc}") from None
    return node


def connect(port: int, timeout: float, blocksize: int = 8192) -> contextlib.closing[http.client.HTTPConnection]:
    """A loopback connection closed on exit: a socket left open by Ctrl-C would keep a
    server's graceful shutdown waiting for a request that never ends."""
    return contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=blocksize))


# ---------------------------------------------------------------- the three servers


def start_edge(stack: contextlib.ExitStack, tmp: Path, event_loop: str) -> EdgeProcess:
    """A real ``edge serve`` from this interpreter's environment, with its own data dir and token."""
    # X-Accel-Redirect only for requests the nginx in front marks: direct ones still get sendfile
    env = {"EDGE_ACCEL_REDIRECT": ACCEL_PREFIX, "EDGE_ACCESS_TRUSTED_PROXIES": "127.0.0.1/32"}
    env["EDGE_EVENT_LOOP"] = event_loop
    return start_node(stack, PinnedEdge(tmp / "edge", admin_token=TOKEN, env=env))


def upload(port: int, sample: Sample, token: str = TOKEN) -> None:
    """PUT the file into the uploads repo, streamed from disk; the edge checks our sha256."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Length": str(sample.size),
        "X-Checksum-Sha256": sample.sha256,
    }
    with sample.path.open("rb") as body, connect(port, timeout=600, blocksize=MiB) as conn:
        conn.request("PUT", f"/artifactory/{UPLOADS_REPO}/bench/{sample.path.name}", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    if response.status != 201:
        raise BenchError(f"upload of {sample.name} answered {response.status}: {answer[:500]!r}")


def which_nginx() -> str:
    try:
        return find_nginx()
    except NginxError:
        raise BenchError("nginx is not installed: run `make bench` (its system-deps target installs it)") from None


def nginx_site(www: Path, port: int) -> str:
    """The static peer: one server, sendfile on, inside the same main config the tests use."""
    return f"""server {{
    listen 127.0.0.1:{port};
    root {www};
    sendfile on;
    tcp_nopush on;
    location / {{ }}
}}
"""


def start_nginx(stack: contextlib.ExitStack, tmp: Path, www: Path, probe: str) -> int:
    """A real nginx as a child (``daemon off``), prefix, pid and logs all in the temp dir."""
    root = tmp / "nginx"
    root.mkdir()
    port = free_port()
    site = root / "static.conf"
    site.write_text(nginx_site(www, port))
    conf = root / "nginx.conf"
    conf.write_text(main_config(root, site))
    cmd = [*pin_prefix(SERVER_CPU), which_nginx(), "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    log = root / "stdout.log"
    wait_ready(start_process(stack, "nginx", cmd, log), port, probe)
    return port


def start_front(stack: contextlib.ExitStack, tmp: Path, edge: EdgeProcess) -> int:
    """nginx with the shipped nginx/edge.conf in front of the edge, on the edge's core."""
    blob_dir = edge.data_dir / "blobs" / "blobs"  # <storage.root>/blobs/, storage.root = <data_dir>/blobs
    front = NginxProcess(tmp / "front", [edge.port or 0], blob_dir, cpus=pin_prefix(SERVER_CPU))
    stack.callback(front.stop)
    try:
        front.start()
    except NginxError as exc:
        raise BenchError(str(exc)) from None
    return front.port or 0


def check_accel(edge_port: int, path: str, sample: Sample) -> None:
    """The edge answers nginx's request with X-Accel-Redirect and no body: nginx sends the bytes."""
    with connect(edge_port, timeout=30) as conn:
        conn.request("GET", path, headers={"X-Sendfile-Type": "X-Accel-Redirect"})
        response = conn.getresponse()
        body = response.read()
    target = response.getheader("X-Accel-Redirect") or ""
    if response.status != 200 or body or not target.startswith(ACCEL_PREFIX) or not target.endswith(sample.sha256):
        raise BenchError(f"the edge did not answer X-Accel-Redirect for {path}: {response.status}, {target!r}")


def bare_app(port: int, event_loop: str) -> None:
    """The reference subprocess: aiohttp answering a fixed in-memory 4 KiB body, nothing else,
    on the event loop the edge runs on."""
    from aiohttp import web

    factory, _ = loop_factory(event_loop)

    body = os.urandom(4 * KiB)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    loop = factory() if factory is not None else None
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def start_bare(stack: contextlib.ExitStack, tmp: Path, event_loop: str) -> tuple[int, int]:
    """The bare app's port and process id (``taskset`` execs it: the id is the app's own)."""
    port = free_port()
    cmd = [*pin_prefix(SERVER_CPU), sys.executable, str(Path(__file__).resolve()), "--bare-app", str(port)]
    cmd += ["--event-loop", event_loop]
    log = tmp / "bare.log"
    bare = start_process(stack, "bare aiohttp", cmd, log)
    wait_ready(bare, port, "/ping")
    return port, bare.pid or 0


# ---------------------------------------------------------------- checks and load


def verify(port: int, path: str, sample: Sample, who: str) -> None:
    """Download once and compare the sha256: equal bytes, and the page cache is warm for both."""
    digest, size = hashlib.sha256(), 0
    with connect(port, timeout=120) as conn:
        conn.request("GET", path)
        response = conn.getresponse()
        while chunk := response.read(MiB):
            digest.update(chunk)
            size += len(chunk)
    if response.status != 200 or size != sample.size or digest.hexdigest() != sample.sha256:
        raise BenchError(f"{who} served {path} wrong: status {response.status}, {size} bytes")


WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d\\n", summary.duration, summary.requests, summary.bytes,
                         e.connect + e.read + e.write + e.status + e.timeout))
  io.write(string.format("LATENCY %d %d %d\\n", latency:percentile(50), latency:percentile(99), latency.max))
  io.write(string.format("ERRORS %d %d %d %d %d\\n", e.connect, e.read, e.write, e.status, e.timeout))
end
"""


WRK_LINES = ("BENCH ", "LATENCY ", "ERRORS ")
WRK_ERRORS = ("connect", "read", "write", "status", "timeout")  # status: answers other than 2xx/3xx


def wrk_command(url: str, connections: int, seconds: int, script: Path, pinned: bool = True) -> list[str]:
    """wrk, one thread on the cores the servers don't use (unless not ``pinned``), reporting by ``script``
    (which ends with ``WRK_REPORT``). wrk stops early on SIGINT and still reports."""
    return [
        *(pin_prefix(client_cpus()) if pinned else []),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        url,
    ]


def parse_wrk(returncode: int, stdout: str, stderr: str) -> Result:
    """The ``Result`` in the lines ``WRK_REPORT`` printed; bytes count partial bodies too."""
    lines = {ln.split()[0]: ln.split()[1:] for ln in stdout.splitlines() if ln.startswith(WRK_LINES)}
    if returncode != 0 or "BENCH" not in lines:
        raise BenchError(f"wrk failed ({returncode}): {stdout}{stderr}")
    micros, requests, nbytes, errors = (int(x) for x in lines["BENCH"])
    latency = Latency(*(int(x) / 1000 for x in lines["LATENCY"])) if "LATENCY" in lines else None
    failures = dict(zip(WRK_ERRORS, map(int, lines.get("ERRORS", [])), strict=False))
    return Result(requests, nbytes, micros / 1e6, errors, latency=latency, failures=failures)


def run_wrk(url: str, connections: int, seconds: int, script: Path, pinned: bool = True) -> Result:
    """wrk for ``seconds``, one thread on the cores the servers don't use (unless not ``pinned``)."""
    cmd = wrk_command(url, connections, seconds, script, pinned)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    return parse_wrk(done.returncode, done.stdout, done.stderr)


async def python_load(url: str, connections: int, seconds: float) -> Result:
    """Fallback without wrk: ``connections`` keep-alive loops until a deadline, bodies discarded."""
    import aiohttp

    deadline = time.monotonic() + seconds
    counts = {"requests": 0, "bytes": 0, "errors": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                async for chunk in response.content.iter_chunked(MiB):
                    counts["bytes"] += len(chunk)
                    if time.monotonic() >= deadline:
                        return
                counts["requests" if response.status == 200 else "errors"] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(connections))), seconds + 30)
        elapsed = time.monotonic() - started
    return Result(counts["requests"], counts["bytes"], elapsed, counts["errors"])


def sequential_downloads(url: str, seconds: float) -> Result:
    """Full downloads one after another on one keep-alive connection, until a deadline.

    Not wrk: wrk reads 8 KiB at a time and tops out near 0.8 GB/s on loopback, well
    below what sendfile delivers, so it would measure itself. ``readinto`` a 4 MiB
    buffer costs little more than the kernel's copy.
    """
    port, path = url.removeprefix("http://127.0.0.1:").split("/", 1)
    buffer = memoryview(bytearray(READ_BUFFER))
    requests = nbytes = errors = 0
    started = time.monotonic()
    deadline = started + seconds
    with connect(int(port), timeout=60) as conn:
        while time.monotonic() < deadline:
            conn.request("GET", "/" + path)
            response = conn.getresponse()
            while (n := response.readinto(buffer)) and time.monotonic() < deadline:
                nbytes += n
            if not response.isclosed():  # cut off at the deadline: this connection is done
                break
            requests, errors = (requests + 1, errors) if response.status == 200 else (requests, errors + 1)
    return Result(requests, nbytes, time.monotonic() - started, errors)


class Load:
    """Bounded loads: small files with wrk (else a Python client), large files by full downloads."""

    def __init__(self, tmp: Path, allow_wrk: bool) -> None:
        self.wrk = allow_wrk and shutil.which("wrk") is not None
        self.script = tmp / "report.lua"
        self.script.write_text(WRK_REPORT)

    def describe(self) -> str:
        small = (
            "wrk, 1 thread"
            if self.wrk
            else "Python aiohttp client (wrk not installed: apt-get install wrk; this client may be the bottleneck)"
        )
        return (
            f"4 KiB: {small}, {SMALL_CONNECTIONS} connections, {SMALL_SECONDS} s; "
            f"1 GiB: sequential full downloads on 1 connection, {LARGE_SECONDS} s"
        )

    def run(self, url: str, small: bool, seconds: int, pinned: bool = True) -> Result:
        if not small:
            return sequential_downloads(url, seconds)
        if self.wrk:
            return run_wrk(url, SMALL_CONNECTIONS, seconds, self.script, pinned)
        return asyncio.run(python_load(url, SMALL_CONNECTIONS, seconds))


def cpu_seconds(pid: int) -> float:
    """User and system time the process used so far (Linux only): requests per CPU second hold
    steady on a machine others load, where requests per second swing with their load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had, in MiB (Linux only)."""
    return status_mib(pid, "VmHWM")


def status_mib(pid: int, field: str) -> float:
    """A memory field of ``/proc/<pid>/status`` (VmRSS: resident now, VmHWM: its peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- the run


@dataclass
class Servers:
    """Where everything listens once started and loaded with the samples."""

    edge_pid: int
    edge_port: int
    front_port: int
    nginx_port: int
    bare_port: int
    bare_pid: int


def edge_path(sample: Sample) -> str:
    return f"/artifactory/{UPLOADS_REPO}/bench/{sample.path.name}"


def setup_servers(
    stack: contextlib.ExitStack, tmp: Path, samples: list[Sample], rss: dict[str, float], event_loop: str
) -> Servers:
    """Start the edge, upload the samples, start nginx and the bare app, and check every byte."""
    www = tmp / "www"
    edge = start_edge(stack, tmp, event_loop)
    edge_port = edge.port or 0
    rss["after start"] = peak_rss_mib(edge.pid)
    for sample in samples:
        upload(edge_port, sample)
    rss["after uploads"] = peak_rss_mib(edge.pid)
    front_port = start_front(stack, tmp, edge)
    nginx_port = start_nginx(stack, tmp, www, "/" + samples[0].path.name)
    bare_port, bare_pid = start_bare(stack, tmp, event_loop)
    for sample in samples:
        verify(edge_port, edge_path(sample), sample, "edge")
        check_accel(edge_port, edge_path(sample), sample)
        verify(front_port, edge_path(sample), sample, "edge through nginx")
        verify(nginx_port, "/" + sample.path.name, sample, "nginx")
    return Servers(edge.pid, edge_port, front_port, nginx_port, bare_port, bare_pid)


def measure(load: Load, servers: Servers, samples: list[Sample], rss: dict[str, float]) -> dict[str, dict[str, Result]]:
    """Each size against each server, warm-up first; the edge's peak RSS after each size."""
    results: dict[str, dict[str, Result]] = {}
    for sample in samples:
        small = sample.size <= MiB
        secs = SMALL_SECONDS if small else LARGE_SECONDS
        urls = {
            "edge": f"http://127.0.0.1:{servers.edge_port}{edge_path(sample)}",
            "edge+nginx": f"http://127.0.0.1:{servers.front_port}{edge_path(sample)}",
            "nginx": f"http://127.0.0.1:{servers.nginx_port}/{sample.path.name}",
        }
        if small:
            urls["bare aiohttp"] = f"http://127.0.0.1:{servers.bare_port}/bare"
        print(f"{sample.name}: {secs} s per server, after {WARMUP_SECONDS} s of warm-up ...", flush=True)
        results[sample.name] = {}
        pids = {"edge": servers.edge_pid, "bare aiohttp": servers.bare_pid}
        for name, url in urls.items():
            load.run(url, small, WARMUP_SECONDS)
            used = cpu_seconds(pids[name]) if name in pids else 0.0
            result = load.run(url, small, secs)
            if name in pids:
                result = dataclasses.replace(result, cpu_seconds=cpu_seconds(pids[name]) - used)
            results[sample.name][name] = result
        rss[f"after {sample.name} load"] = peak_rss_mib(servers.edge_pid)
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


METRICS: dict[str, Callable[[Result], float]] = {"req/s": lambda r: r.rps, "MB/s": lambda r: r.mbps}


def print_table(results: dict[str, dict[str, Result]], rss: dict[str, float]) -> None:
    """Edge, edge through nginx, nginx (and bare aiohttp for small files): rates and ratios, then memory."""
    columns = [("file", "<7"), ("metric", "<7"), ("edge", ">10"), ("edge+nginx", ">11"), ("nginx", ">10")]
    columns += [("edge/nginx", ">11"), ("edge+nginx/nginx", ">17"), ("bare aiohttp", ">13"), ("edge/bare", ">10")]
    head = " ".join(f"{name:{spec}}" for name, spec in columns)
    print("\n" + head + "\n" + "-" * len(head))
    for size, by_server in results.items():
        for metric, value in METRICS.items():
            edge, front, nginx = (value(by_server[name]) for name in ("edge", "edge+nginx", "nginx"))
            row = f"{size:<7} {metric:<7} {edge:10.1f} {front:11.1f} {nginx:10.1f}"
            row += f" {ratio(edge, nginx):>11} {ratio(front, nginx):>17}"
            if "bare aiohttp" in by_server:
                bare = value(by_server["bare aiohttp"])
                row += f" {bare:13.1f} {ratio(edge, bare):>10}"
            print(row)
    for size, by_server in results.items():
        if "bare aiohttp" in by_server:
            edge, bare = by_server["edge"].per_cpu_second, by_server["bare aiohttp"].per_cpu_second
            per_cpu = f"edge {edge:.1f}, bare aiohttp {bare:.1f}, edge/bare {ratio(edge, bare)}"
            print(f"{size} requests per CPU second of the server process: {per_cpu}")
    errors = {f"{size}/{name}": r.errors for size, rs in results.items() for name, r in rs.items() if r.errors}
    print(f"\nerrors (non-2xx, socket, timeouts): {errors or 'none'}")
    print("edge peak RSS (VmHWM): " + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()))
    print("MB = 10^6 bytes received: wrk counts headers too (the edge sends ~600 B of them), partial bodies count.")


def measure_workers(
    stack: contextlib.ExitStack, tmp: Path, load: Load, sample: Sample, most: int, event_loop: str
) -> list[Result]:
    """The small file from an edge of 1 worker, then of ``most``, each loaded alone; nothing is pinned:
    pinned to one core, the load generator would be the bottleneck as soon as a worker shared it."""
    results = []
    for count in sorted({1, most}):
        with contextlib.ExitStack() as own:
            edge = start_node(
                own,
                EdgeProcess(
                    tmp / f"edge-{count}-workers", admin_token=TOKEN, workers=count, env={"EDGE_EVENT_LOOP": event_loop}
                ),
            )
            port = edge.port or 0
            upload(port, sample)
            url = f"http://127.0.0.1:{port}{edge_path(sample)}"
            for _ in range(count * 4):  # each worker looks the file up once before the clock starts
                verify(port, edge_path(sample), sample, f"edge of {count} workers")
            print(
                f"{sample.name}: edge of {count} worker(s), {SMALL_SECONDS} s after {WARMUP_SECONDS} s ...", flush=True
            )
            load.run(url, True, WARMUP_SECONDS, pinned=False)
            results.append(load.run(url, True, SMALL_SECONDS, pinned=False))
    return results


def print_workers(sample: Sample, most: int, results: list[Result]) -> None:
    one, many = results[0], results[-1]
    print(f"\n{sample.name} edge req/s by workers (nothing pinned: wrk shares the cores with the workers)")
    gain = ratio(many.rps, one.rps)
    print(f"1 worker {one.rps:10.1f}   {most} workers {many.rps:10.1f}   {most} workers/1 worker {gain}")
    errors = one.errors + many.errors
    print(f"errors (non-2xx, socket, timeouts): {errors or 'none'}")


def run(allow_wrk: bool, workers: int, only_workers: bool, event_loop: str, only_small: bool = False) -> None:
    """Set up in a temp dir, measure, print; the ExitStack undoes everything in reverse."""
    started = time.monotonic()
    load_cpu = f"pinned: servers on CPU {SERVER_CPU}, load on CPUs {client_cpus()}" if can_pin() else "not pinned"
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        (tmp / "www").mkdir()
        print(f"writing sample files to {tmp} ...", flush=True)
        samples = make_samples(tmp / "www", small_only=only_workers or only_small)
        load = Load(tmp, allow_wrk)
        print(f"event loop of the edge and the bare aiohttp app: {loop_factory(event_loop)[1]}")
        if not only_workers:
            rss: dict[str, float] = {}
            servers = setup_servers(stack, tmp, samples, rss, event_loop)
            pin_self_to_client_cpus()
            print(f"load: {load.describe()}\n{os.cpu_count()} CPUs, {load_cpu}")
            print("nginx: worker_processes 1, sendfile on (the edge is a single process too)")
            print("edge+nginx: nginx/edge.conf in front of the same edge, X-Accel-Redirect; both on the servers' core")
            results = measure(load, servers, samples, rss)
            print_table(results, rss)
        if not only_small:
            small = samples[0]
            print_workers(small, workers, measure_workers(stack, tmp, load, small, workers, event_loop))
    print(f"\ntotal wall time: {time.monotonic() - started:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--python-client", action="store_true", help="use the Python load generator even if wrk is installed"
    )
    parser.add_argument(
        "--workers", type=int, default=one_per_core(), help="the N of the 1-and-N-workers comparison [one per core]"
    )
    parser.add_argument("--only-workers", action="store_true", help="only the 1-and-N-workers comparison")
    parser.add_argument(
        "--only-small", action="store_true", help="only the 4 KiB file against nginx and the bare app, one worker"
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=EdgeSettings().event_loop,
        help="the event loop of the edge and of the bare aiohttp app (default: the edge's default)",
    )
    parser.add_argument("--bare-app", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_app is not None:
        bare_app(args.bare_app, args.event_loop)
        return 0
    run_bench(
        lambda: run(
            allow_wrk=not args.python_client,
            workers=args.workers,
            only_workers=args.only_workers,
            event_loop=args.event_loop,
            only_small=args.only_small,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
