"""Identity, permission and audit benchmark: what each costs per request on a small download.

Run by hand (``python bench/audit.py``); it is not part of the test suite. Real
``edge serve`` processes, one with ``[audit] enabled = false`` and the others with the
default (audit on), serve the same 4 KiB file; the scenarios are measured in turns in the
same run:

- **audit off / anonymous**: the baseline;
- **audit on / anonymous**: one audit record per request, written in batches;
- **audit on / token**: a Bearer token (resolved from memory after the first request);
- **audit on / basic user**: basic auth with a user's password (scrypt once, then
  remembered until the user changes);
- **audit on / user + targets**: a third edge like the second, plus 200 permission
  targets, 20 of them naming the repo and covering the file, the user reading through
  a group grant.

Requests/s with wrk (one thread, 32 connections; an aiohttp client when wrk is missing),
a warm-up before each run, two rounds alternating the order; and the server's CPU time
per request (the lower of the two rounds), which a busy machine disturbs less. Before measuring, each
scenario is checked to serve the right bytes, and afterwards the audit edge is checked
to have written one record per request it answered. Everything listens on 127.0.0.1
only and is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sqlite3
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
PASSWORD = "bench-password-" + os.urandom(6).hex()
CONNECTIONS, SECONDS, WARMUP_SECONDS, ROUNDS = 32, 10, 2, 2
TARGETS, TARGETS_ON_REPO = 200, 20


@dataclass(frozen=True)
class Scenario:
    name: str
    port: int
    pid: int
    headers: dict[str, str]


def start_edge(stack: contextlib.ExitStack, tmp: Path, name: str, audit: bool) -> tuple[int, int, Path]:
    edge = BIN_DIR / "edge"
    if not edge.exists():
        raise BenchError(f"{edge} not found: install the project first (make install)")
    port = free_port()
    base = tmp / name
    base.mkdir()
    cmd = [*pin_prefix(SERVER_CPU), str(edge), "serve", "--data-dir", str(base / "data"), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env |= {"EDGE_ADMIN_TOKEN": TOKEN, "EDGE_AUDIT_ENABLED": "true" if audit else "false"}
    log = base / "edge.log"
    proc = start_process(stack, f"edge ({name})", cmd + ["--host", "127.0.0.1"], log, env)
    wait_ready(proc, f"edge ({name})", port, "/artifactory/api/system/ping", log)
    return port, proc.pid, base / "data" / "catalog.db"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and the threads in it (sqlite's included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def call(port: int, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if body is not None:
        headers["Content-Type"] = "application/json"
    with connect(port, timeout=30) as conn:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()


def prepare(port: int, data: bytes, *, targets: bool) -> tuple[str, str]:
    """The file, a user in group 'bench', maybe the targets, a reader token: (token, basic header)."""
    expect = {"PUT": (200, 201), "POST": (201,)}
    steps = [
        ("PUT", f"/artifactory/{FILE_PATH}", None, data),
        ("PUT", "/artifactory/api/security/users/bench", {"password": PASSWORD, "groups": ["bench"]}, None),
    ]
    for i in range(TARGETS if targets else 0):
        repos = [UPLOADS_REPO] if i < TARGETS_ON_REPO else [f"other-{i}"]
        grant = {"groups": {"bench": ["read"]}} if i == 0 else {"users": {f"u{i}": ["read", "write"]}}
        body = {"repo": {"repositories": repos, "include-patterns": ["bench/**"], "actions": grant}}
        steps.append(("PUT", f"/artifactory/api/v2/security/permissions/t{i:03}", body, None))
    for method, path, body, raw in steps:
        status, answer = call(port, method, path, body, raw)
        if status not in expect[method]:
            raise BenchError(f"{method} {path} answered {status}: {answer[:300]!r}")
    status, answer = call(port, "POST", "/access/api/v1/tokens", {"username": "svc", "role": "reader"})
    if status != 201:
        raise BenchError(f"token answered {status}")
    basic = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    return json.loads(answer)["access_token"], f"Basic {basic}"


def get(scenario: Scenario) -> tuple[int, bytes]:
    with connect(scenario.port, timeout=30) as conn:
        conn.request("GET", f"/artifactory/{FILE_PATH}", headers=scenario.headers)
        response = conn.getresponse()
        return response.status, response.read()


def run_wrk(scenario: Scenario, seconds: int, script: Path) -> Result:
    headers = [arg for name, value in scenario.headers.items() for arg in ("-H", f"{name}: {value}")]
    url = f"http://127.0.0.1:{scenario.port}/artifactory/{FILE_PATH}"
    cmd = [*pin_prefix(client_cpus()), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "30s"]
    cmd += [*headers, "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    micros, requests, nbytes, errors = (int(x) for x in line.split()[1:])
    return Result(requests, nbytes, micros / 1e6, errors)


async def python_load(scenario: Scenario, seconds: float) -> Result:
    import aiohttp

    url = f"http://127.0.0.1:{scenario.port}/artifactory/{FILE_PATH}"
    deadline = time.monotonic() + seconds
    counts = {"requests": 0, "bytes": 0, "errors": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url, headers=scenario.headers) as response:
                counts["bytes"] += len(await response.read())
                counts["requests" if response.status == 200 else "errors"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(CONNECTIONS))), seconds + 30)
        elapsed = time.monotonic() - started
    return Result(counts["requests"], counts["bytes"], elapsed, counts["errors"])


def load(scenario: Scenario, seconds: int, script: Path | None) -> Result:
    return run_wrk(scenario, seconds, script) if script else asyncio.run(python_load(scenario, seconds))


def audit_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM audit WHERE action = 'download'").fetchone()[0])


def run(allow_wrk: bool) -> None:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="edge-audit-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        off_port, off_pid, _ = start_edge(stack, tmp, "off", audit=False)
        on_port, on_pid, on_db = start_edge(stack, tmp, "on", audit=True)
        targets_port, targets_pid, _ = start_edge(stack, tmp, "targets", audit=True)
        data = os.urandom(4 * KiB)
        prepare(off_port, data, targets=False)
        token, basic = prepare(on_port, data, targets=False)
        _, targets_basic = prepare(targets_port, data, targets=True)
        scenarios = [
            Scenario("audit off / anonymous", off_port, off_pid, {}),
            Scenario("audit on / anonymous", on_port, on_pid, {}),
            Scenario("audit on / token", on_port, on_pid, {"Authorization": f"Bearer {token}"}),
            Scenario("audit on / basic user", on_port, on_pid, {"Authorization": basic}),
            Scenario("audit on / user + targets", targets_port, targets_pid, {"Authorization": targets_basic}),
        ]
        for scenario in scenarios:
            if get(scenario) != (200, data):
                raise BenchError(f"{scenario.name}: did not serve the file")
        script = None
        if allow_wrk and shutil.which("wrk"):
            script = tmp / "report.lua"
            script.write_text(WRK_REPORT)
        pin_self_to_client_cpus()
        pinned = f"server on CPU {SERVER_CPU}, load on CPUs {client_cpus()}" if can_pin() else "not pinned"
        print(f"4 KiB file; {'wrk' if script else 'aiohttp client'}, {CONNECTIONS} connections, {SECONDS} s runs")
        print(f"{os.cpu_count()} CPUs, {pinned}; {ROUNDS} rounds")
        before = audit_rows(on_db)
        results: dict[str, list[Result]] = {s.name: [] for s in scenarios}
        cpu: dict[str, list[float]] = {s.name: [] for s in scenarios}
        answered = 0
        for round_no in range(1, ROUNDS + 1):
            for scenario in scenarios if round_no % 2 else reversed(scenarios):
                print(f"round {round_no}: {scenario.name} ...", flush=True)
                for seconds, keep in ((WARMUP_SECONDS, False), (SECONDS, True)):
                    used = cpu_seconds(scenario.pid)
                    result = load(scenario, seconds, script)
                    used = cpu_seconds(scenario.pid) - used
                    if scenario.port == on_port:
                        answered += result.requests + result.errors
                    if keep:
                        results[scenario.name].append(result)
                        cpu[scenario.name].append(used / max(result.requests, 1) * 1e6)
        time.sleep(1.5)  # one flush interval and then some
        written = audit_rows(on_db) - before
        print_table(results, cpu)
        print(f"\naudit records written for the audit edge's downloads: {written} (answered: about {answered})")
    print(f"total wall time: {time.monotonic() - started:.1f} s")


def print_table(results: dict[str, list[Result]], cpu: dict[str, list[float]]) -> None:
    """Throughput, and the server's CPU time per request: the steadier figure on a busy machine."""
    names = list(results)
    base = statistics.mean(r.rps for r in results[names[0]])
    base_cpu = min(cpu[names[0]])
    head = (
        f"{'scenario':<28} {'req/s (mean)':>13} {'rounds':>16} {'vs first':>9}"
        f" {'CPU us/req':>11} {'+CPU us':>8} {'errors':>7}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, runs in results.items():
        mean = statistics.mean(r.rps for r in runs)
        rounds = ", ".join(f"{r.rps:.0f}" for r in runs)
        used = min(cpu[name])
        errors = sum(r.errors for r in runs)
        print(
            f"{name:<28} {mean:13.1f} {rounds:>16} {mean / base:9.2f} {used:11.1f} {used - base_cpu:8.1f} {errors:7d}"
        )


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
