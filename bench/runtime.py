"""Runtime inventory cost: the agent's scan and the control plane's provenance lookups.

Agent side, on a synthetic /proc-shaped process table (``agent.runtime.ProcInfo`` rows) whose
executables are this machine's real files under /usr/bin, /usr/sbin and /usr/lib (so hashing
reads real binaries of real sizes), for N = 200 and 2,000 processes:

- CPU seconds of one scan with a cold hash cache and with a warm one (``agent.runtime.Scanner``);
- the same scan done naively, osquery-``hash``-style: every executable read and hashed every
  time; the ratio naive / warm is what the cache saves;
- bytes of a full report and of a delta where 1% of the processes changed;
- the same, once, for this machine's live process table.

Control plane side, a real ``distribution serve`` (``devstack/``) with 20 signed bundle versions
and 10,000 devices enrolled through the device protocol: reports per second and sha256
lookups per second for a full report of 30 processes from every device (20 system binaries
the fleet shares, 5 files of bundles, 5 of the device's own), then a delta from every device
(5 started, 5 stopped), sent over HTTP 64 at a time; then the time of the queries (where a
bundle version runs, one device, unknown executables of a group). The sender shares the
machine's cores with the service.

    .venv/bin/python bench/runtime.py
    .venv/bin/python bench/runtime.py --devices 2000 --processes 200
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from common import BenchError, run_bench

from agent.runtime import HashCache, ProcInfo, Scanner, live_processes
from devstack import rest
from devstack.services import SOURCE_REPO, DistributionProcess
from wire import fleet
from wire.runtime import RUNTIME, Process, RuntimeReport, RuntimeSettings, encode_report

SETTINGS = RuntimeSettings()
CONCURRENCY = 64


def executables(count: int) -> list[str]:
    """Up to ``count`` real executable files of this machine."""
    found: list[str] = []
    for root in ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/local/bin"):
        for folder, _dirs, files in os.walk(root):
            for name in sorted(files):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.X_OK):
                    found.append(path)
                    if len(found) == count:
                        return found
    if not found:
        raise BenchError("no executable files found under /usr")
    return found


def table(n: int, exes: list[str]) -> list[ProcInfo]:
    """``n`` processes over the executables, a quarter of them sharing one (as shells and workers do)."""
    rows = []
    for pid in range(1, n + 1):
        exe = exes[0] if pid % 4 == 0 else exes[pid % len(exes)]
        rows.append(ProcInfo(pid, 1_700_000_000_000 + pid, exe, (exe, "--serve", str(pid)), "svc", exe))
    return rows


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def naive(rows: list[ProcInfo]) -> None:
    for row in rows:
        with open(row.exe_open, "rb") as f:
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)


def report_bytes(found: dict[tuple[int, int], Process]) -> tuple[int, int]:
    processes = tuple(found.values())
    _, full = encode_report(RuntimeReport("till-0042", 1, 0, 1, processes))
    changed = max(1, len(processes) // 100)
    stopped = tuple(p.key for p in processes[:changed])
    _, delta = encode_report(RuntimeReport("till-0042", 2, 1, 2, processes[-changed:], stopped))
    return len(full), len(delta)


def agent_side(sizes: list[int]) -> None:
    exes = executables(max(sizes))
    print(f"agent scan, synthetic table over {len(exes)} real executables of this machine")
    print(
        f"{'processes':>10} {'cold s':>8} {'warm s':>8} {'naive s':>8} {'naive/warm':>10} {'full B':>9} {'delta B':>8}"
    )
    for n in sizes:
        rows = table(n, exes)
        scanner = Scanner(HashCache(4096), containers=False)
        cold = cpu(lambda: scanner.scan(rows, SETTINGS))  # noqa: B023
        warm = cpu(lambda: scanner.scan(rows, SETTINGS))  # noqa: B023
        slow = cpu(lambda: naive(rows))  # noqa: B023
        full, delta = report_bytes(scanner.scan(rows, SETTINGS)[0])
        print(f"{n:>10} {cold:>8.3f} {warm:>8.3f} {slow:>8.3f} {slow / warm:>10.1f} {full:>9} {delta:>8}")
    live = list(live_processes())
    scanner = Scanner(HashCache(4096))
    cold = cpu(lambda: scanner.scan(live, SETTINGS))
    warm = cpu(lambda: scanner.scan(live, SETTINGS))
    print(f"live table: {len(live)} processes, cold {cold:.3f} s, warm {warm:.3f} s CPU")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def bundle_file(b: int, f: int) -> bytes:
    return f"bundle {b} file {f}\n".encode()


def release(service: DistributionProcess, bundles: int, files: int) -> None:
    """``bundles`` signed versions of ``bench-app`` with ``files`` files each, made as a release manager does."""
    for b in range(bundles):
        for f in range(files):
            url = f"{service.url}/artifactory/{SOURCE_REPO}/bench-app/1.{b}/f{f}"
            status, answer = rest.request("PUT", url, service.admin_token, data=bundle_file(b, f))
            if status != 201:
                raise BenchError(f"upload: {status} {answer}")
        body = {"name": "bench-app", "version": f"1.{b}", "sign_immediately": True}
        body["spec"] = {"queries": [{"pattern": f"{SOURCE_REPO}/bench-app/1.{b}/*"}]}
        status, answer = rest.request(
            "POST", f"{service.url}/distribution/api/v1/release_bundle", service.admin_token, body
        )
        if status != 201:
            raise BenchError(f"release bundle: {status} {answer}")


def device_report(d: int, seq: int, base: int, bundles: int, files: int) -> RuntimeReport:
    """30 processes: 20 system binaries the whole fleet shares, 5 files of bundles, 5 of the device's own."""
    procs = [Process(i, i, f"/usr/bin/sys{i}", _sha(f"sys{i}")) for i in range(20)]
    shipped = [hashlib.sha256(bundle_file((d + i) % bundles, i % files)).hexdigest() for i in range(5)]
    procs += [Process(100 + i, 1, "/opt/app", sha) for i, sha in enumerate(shipped)]
    procs += [Process(200 + i, seq, "/tmp/x", _sha(f"d{d}-{seq}-{i}")) for i in range(5)]
    if base == 0:
        return RuntimeReport(f"dev-{d:06d}", seq, 0, 1, tuple(procs))
    stopped = tuple((200 + i, base) for i in range(5))
    return RuntimeReport(f"dev-{d:06d}", seq, base, 2, tuple(procs[-5:]), stopped)


async def _each(count: int, work: Callable[[int], Awaitable[None]]) -> float:
    begun, pending = time.perf_counter(), iter(range(count))

    async def worker() -> None:
        for index in pending:
            await work(index)

    async with asyncio.TaskGroup() as workers:
        for _ in range(CONCURRENCY):
            workers.create_task(worker())
    return time.perf_counter() - begun


async def plane_side(devices: int, bundles: int = 20, files: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp, DistributionProcess(Path(tmp)) as service:
        release(service, bundles, files)
        status, token = rest.request(
            "POST",
            f"{service.url}{fleet.FLEET_API}/enrollment-tokens",
            service.admin_token,
            {"group": "bench", "expires_in": 24 * 3600},
        )
        if status != 201:
            raise BenchError(f"enrollment token: {status} {token}")
        credentials: dict[int, str] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:

            async def enroll(d: int) -> None:
                body = fleet.EnrollRequest(token["token"], f"dev-{d:06d}").to_json()
                async with session.post(service.url + fleet.ENROLL, json=body) as resp:
                    if resp.status != 201:
                        raise BenchError(f"enroll: {resp.status} {await resp.text()}")
                    credentials[d] = (await resp.json())["credential"]

            took = await _each(devices, enroll)
            print(f"control plane: a real distribution serve, {devices} devices enrolled in {took:.0f} s,")
            print(f"  {bundles} signed bundle versions of {files} files; reports over HTTP, {CONCURRENCY} at a time")
            for label, seq, base in (("full", 1, 0), ("delta", 2, 1)):
                reports = [encode_report(device_report(d, seq, base, bundles, files))[1] for d in range(devices)]

                async def send(d: int, reports: list[bytes] = reports) -> None:
                    headers = {**fleet.device_headers(credentials[d]), "Content-Type": "application/json"}
                    async with session.post(service.url + RUNTIME, data=reports[d], headers=headers) as resp:
                        if resp.status != 200:
                            raise BenchError(f"report: {resp.status} {await resp.text()}")

                took = await _each(devices, send)
                lookups = devices * (30 if base == 0 else 5)
                size = sum(map(len, reports)) // devices
                print(
                    f"  {label:>5} reports ({size} B each): {devices / took:,.0f} reports/s,"
                    f" {lookups / took:,.0f} sha256 lookups/s ({took:.1f} s)"
                )
            headers = {"Authorization": f"Bearer {service.admin_token}"}
            base_url = f"{service.url}{fleet.FLEET_API}/runtime"
            for path in ("/where/bench-app/1.7", "/devices/dev-000042", "/unknown?group=bench"):
                begun = time.perf_counter()
                async with session.get(base_url + path, headers=headers) as resp:
                    found = await resp.json()
                rows = found["processes"] if isinstance(found, dict) else found
                print(f"  GET runtime{path}: {(time.perf_counter() - begun) * 1000:.0f} ms ({len(rows)} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="200,2000", help="process table sizes, comma-separated")
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    run_bench(lambda: (agent_side([int(n) for n in args.processes.split(",")]), asyncio.run(plane_side(args.devices))))


if __name__ == "__main__":
    main()
