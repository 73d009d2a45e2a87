"""Access pipeline benchmark: what client address, IP and geo rules and signed URLs cost per request.

Run by hand (``python bench/access.py``); it is not part of the test suite. Two real
``edge serve`` processes run side by side, measured in turns in the same run, on the
same 4 KiB file (small files are where per-request work shows):

- **off**: an edge with no ``[access]`` settings (the pipeline still runs: it finds
  the client address and the repo, then has no rule to apply);
- **rules on**: an edge behind a trusted proxy with a geo database and IP and geo
  rules, global and per repo; every request carries ``X-Forwarded-For`` with two
  hops to walk, is looked up in the .mmdb and checked against every rule;
- **rules + signed URL**: the same edge, each request also carrying a signed URL
  (an Ed25519 signature verified per request, plus the claim checks).

Load comes from wrk (one thread, 32 connections; an aiohttp client when wrk is
missing), with a warm-up before each measurement, over three rounds that alternate
the scenarios so that drift on the machine hits all alike. Two figures per scenario:
requests/s, and the edge process's CPU time per request (utime + stime from /proc
over the measured seconds, divided by the requests answered). The second is what
the pipeline costs, and holds steady when other processes share the machine; the
first is what a client sees on this machine right now. Before measuring, each
scenario is checked to do what it claims: the right bytes for an allowed client, a
403 for a denied one. Everything listens on 127.0.0.1 only and is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from download import (  # noqa: E402  (the download benchmark's process and load helpers)
    BIN_DIR,
    SERVER_CPU,
    WRK_REPORT,
    BenchError,
    Result,
    can_pin,
    client_cpus,
    connect,
    free_port,
    pin_prefix,
    pin_self_to_client_cpus,
    start_process,
    wait_ready,
)

KiB = 1024
UPLOADS_REPO = "artifactory-edge-uploads"
FILE_PATH = f"{UPLOADS_REPO}/bench/small.bin"
TOKEN = "bench-admin-token-" + os.urandom(6).hex()
CONNECTIONS, SECONDS, WARMUP_SECONDS, ROUNDS = 32, 8, 2, 3
TICKS = os.sysconf("SC_CLK_TCK")
# The client as a trusted proxy reports it: an allowed country, behind two proxies.
FORWARDED = "198.51.100.7, 10.20.30.40"
DENIED = "192.0.2.5, 10.20.30.40"

RULES_ON = """\
[access]
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
geoip_database = "{geo}"
geo_unknown = "deny"
[[access.rules]]
deny_cidrs = [{deny}]
[[access.rules]]
repos = ["releases-*", "artifactory-edge-*"]
allow_cidrs = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]
deny_cidrs = ["203.0.113.0/24"]
allow_countries = ["US", "CA", "DE"]
deny_countries = ["KP"]
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    pid: int
    port: int
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Run:
    result: Result
    cpu_seconds: float  # of the edge process, over the measured seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.result.requests, 1) * 1e6


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def write_geo_database(path: Path) -> None:
    try:
        from tests.mmdb import write_mmdb
    except ImportError as exc:
        raise BenchError(f"{exc}: install the test extra (pip install -e '.[test]') for mmdb-writer") from None
    write_mmdb(path)


def start_edge(stack: contextlib.ExitStack, tmp: Path, name: str, config: str | None) -> tuple[int, int]:
    edge = BIN_DIR / "edge"
    if not edge.exists():
        raise BenchError(f"{edge} not found: install the project first (make install)")
    port = free_port()
    base = tmp / name
    base.mkdir()
    cmd = [*pin_prefix(SERVER_CPU), str(edge), "serve", "--data-dir", str(base / "data"), "--port", str(port)]
    if config is not None:
        (base / "edge.toml").write_text(config)
        cmd += ["--config", str(base / "edge.toml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")} | {"EDGE_ADMIN_TOKEN": TOKEN}
    log = base / "edge.log"
    proc = start_process(stack, f"edge ({name})", cmd + ["--host", "127.0.0.1"], log, env)
    wait_ready(proc, f"edge ({name})", port, "/artifactory/api/system/ping", log)
    return proc.pid, port


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    with connect(port, timeout=30) as conn:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()


def upload(port: int, data: bytes) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": FORWARDED}  # the rules cover uploads too
    status, answer = request(port, "PUT", f"/artifactory/{FILE_PATH}", headers, data)
    if status != 201:
        raise BenchError(f"upload answered {status}: {answer[:300]!r}")


def signed_path(port: int) -> str:
    body = json.dumps({"repo_path": f"/{FILE_PATH}", "valid_for_secs": 3600}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, answer = request(port, "POST", "/artifactory/api/signed/url", headers, body)
    if status != 200:
        raise BenchError(f"signing a URL answered {status}: {answer[:300]!r}")
    url = answer.decode()
    return url[url.index("/artifactory/") :]


def check(scenario: Scenario, data: bytes) -> None:
    """The scenario serves the right bytes, and on the rules edge a denied client gets its 403."""
    status, body = request(scenario.port, "GET", scenario.path, scenario.headers)
    if status != 200 or body != data:
        raise BenchError(f"{scenario.name}: answered {status} with {len(body)} bytes")
    if scenario.headers:
        status, _ = request(scenario.port, "GET", scenario.path, {"X-Forwarded-For": DENIED})
        if status != 403:
            raise BenchError(f"{scenario.name}: a client in a denied country got {status}, not 403")


def run_wrk(scenario: Scenario, seconds: int, script: Path) -> Result:
    headers = [arg for name, value in scenario.headers.items() for arg in ("-H", f"{name}: {value}")]
    url = f"http://127.0.0.1:{scenario.port}{scenario.path}"
    cmd = [*pin_prefix(client_cpus()), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "30s"]
    cmd += [*headers, "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    micros, requests, nbytes, errors = (int(x) for x in line.split()[1:])
    return Result(requests, nbytes, micros / 1e6, errors)


async def python_load(scenario: Scenario, seconds: float) -> Result:
    """Without wrk: keep-alive loops until a deadline (this client may be the bottleneck)."""
    import aiohttp

    url = f"http://127.0.0.1:{scenario.port}{scenario.path}"
    deadline = time.monotonic() + seconds
    counts = {"requests": 0, "bytes": 0, "errors": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url, headers=scenario.headers) as response:
                counts["bytes"] += len(await response.read())
                counts["requests" if response.status == 200 else "errors"] += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(CONNECTIONS))), seconds + 30)
        elapsed = time.monotonic() - started
    return Result(counts["requests"], counts["bytes"], elapsed, counts["errors"])


def load(scenario: Scenario, seconds: int, script: Path | None) -> Result:
    if script is not None:
        return run_wrk(scenario, seconds, script)
    return asyncio.run(python_load(scenario, seconds))


def measure(scenarios: list[Scenario], script: Path | None) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {s.name: [] for s in scenarios}
    for round_no in range(1, ROUNDS + 1):
        for scenario in scenarios if round_no % 2 else reversed(scenarios):
            print(f"round {round_no}: {scenario.name} ...", flush=True)
            load(scenario, WARMUP_SECONDS, script)
            before = cpu_seconds(scenario.pid)
            result = load(scenario, SECONDS, script)
            runs[scenario.name].append(Run(result, cpu_seconds(scenario.pid) - before))
    return runs


def print_table(runs: dict[str, list[Run]]) -> None:
    rps = {name: statistics.median(r.result.rps for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r.cpu_us_per_request for r in rs) for name, rs in runs.items()}
    head = (
        f"{'scenario':<20} {'req/s':>8} {'vs off':>7} {'CPU us/req':>11} {'vs off':>7} {'+us/req':>8}"
        f" {'errors':>7}  req/s of each round"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, rs in runs.items():
        errors = sum(r.result.errors for r in rs)
        rounds = ", ".join(f"{r.result.rps:.0f}" for r in rs)
        print(
            f"{name:<20} {rps[name]:8.0f} {rps[name] / rps['off']:7.2f} {cpu[name]:11.1f}"
            f" {cpu[name] / cpu['off']:7.2f} {cpu[name] - cpu['off']:8.1f} {errors:7d}  {rounds}"
        )
    print("medians over the rounds; CPU is the edge process's own (user + system), per request answered")


def run(allow_wrk: bool) -> None:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="edge-access-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        geo = tmp / "GeoLite2-Country.mmdb"
        write_geo_database(geo)
        deny = ", ".join(f'"100.{i}.0.0/16"' for i in range(64, 84))
        off_pid, off_port = start_edge(stack, tmp, "off", None)
        on_pid, on_port = start_edge(stack, tmp, "on", RULES_ON.format(geo=geo, deny=deny))
        data = os.urandom(4 * KiB)
        upload(off_port, data)
        upload(on_port, data)
        forwarded = {"X-Forwarded-For": FORWARDED}
        scenarios = [
            Scenario("off", off_pid, off_port, f"/artifactory/{FILE_PATH}", {}),
            Scenario("rules on", on_pid, on_port, f"/artifactory/{FILE_PATH}", forwarded),
            Scenario("rules + signed URL", on_pid, on_port, signed_path(on_port), forwarded),
        ]
        for scenario in scenarios:
            check(scenario, data)
        script = None
        if allow_wrk and shutil.which("wrk"):
            script = tmp / "report.lua"
            script.write_text(WRK_REPORT)
        pin_self_to_client_cpus()
        pinned = f"servers on CPU {SERVER_CPU}, load on CPUs {client_cpus()}" if can_pin() else "not pinned"
        client = "wrk, 1 thread" if script else "Python aiohttp client (apt-get install wrk for a better one)"
        print(f"4 KiB file; {client}, {CONNECTIONS} connections, {SECONDS} s per run after {WARMUP_SECONDS} s")
        print(f"{os.cpu_count()} CPUs, {pinned}; {ROUNDS} rounds, scenarios alternating")
        print_table(measure(scenarios, script))
    print(f"\ntotal wall time: {time.monotonic() - started:.1f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-client", action="store_true", help="use the Python load generator even with wrk")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run(allow_wrk=not args.python_client)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaned up", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
