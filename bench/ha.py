"""HA benchmark: replicas of one edge on PostgreSQL and S3 behind nginx, against that same nginx
serving the same files from a local disk, in one run.

Run by hand (``python bench/ha.py``); it is not part of the test suite. The replicas are real
``edge serve`` processes sharing one PostgreSQL database (``devstack/postgres.py``) and one
SeaweedFS bucket (``devstack/seaweed.py``) behind one nginx running the shipped
``nginx/edge.conf`` (``devstack/replicas.py``), with ``redirect_downloads = false``: every byte
goes from S3 through a replica and nginx to the client. The same nginx also serves the same
files from a temp dir with sendfile (a plain static location): the floor, what nginx alone
costs for these bytes on this machine at this moment. It prints:

- req/s of a 4 KiB file and MB/s of a 64 MiB file through nginx to 1 replica and to 3, each
  beside the floor of its own nginx, as ratios (replicas/floor, 3 replicas/1 replica), and the
  replicas' requests per CPU second (steadier than req/s on a machine others load);
- the p50, p99 and max latency and the failed requests of 4 KiB downloads through nginx to 3
  replicas, in a steady window and in a window in which one replica is killed with SIGKILL
  and started again (nginx's ``proxy_next_upstream`` retries what the dead one dropped);
- each replica's resident memory (now and peak) after the loads.

Nothing is pinned: replicas, nginx, PostgreSQL, SeaweedFS and the load generator share the
machine's cores, as replicas sharing a machine would. Everything listens on 127.0.0.1 only,
every load is bounded in time, and every process and temp file is removed on exit, Ctrl-C
or error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from download import (
    SMALL_CONNECTIONS,
    WRK_REPORT,
    Result,
    Sample,
    cpu_seconds,
    edge_path,
    make_samples,
    parse_wrk,
    ratio,
    run_wrk,
    sequential_downloads,
    status_mib,
    upload,
    verify,
    wrk_command,
)

from devstack.nginx import STATIC_PREFIX, NginxError
from devstack.postgres import PostgresServer
from devstack.processes import StartFailed
from devstack.replicas import EdgeReplicas
from devstack.seaweed import SeaweedProcess

KiB, MiB = 1024, 1024**2
SIZES = {"4 KiB": 4 * KiB, "64 MiB": 64 * MiB}
LARGE_CONNECTIONS = 3  # full downloads in flight at once: one per replica of the larger topology
WARMUP_SECONDS, LOAD_SECONDS = 1, 4
WINDOW_CONNECTIONS = 8  # the latency windows: fewer connections than the throughput load, so
STEADY_SECONDS = 6  # queueing inside a saturated replica does not drown what a kill adds
BEFORE_KILL, DOWN_SECONDS, AFTER_RESTART = 2.0, 1.0, 2.0
WINDOW_LIMIT = 120  # wrk's own bound on the kill window; it is interrupted long before
VICTIM = 1  # the second replica: killed and started again
BUCKET_PREFIX = "ha-bench/"
OVERALL_TIMEOUT = 600


@dataclasses.dataclass
class Window:
    """The latency windows and when the victim went down and came back, in seconds from the window's start."""

    steady: Result
    fault: Result
    killed: float
    restarted: float
    answering: float


def parallel_downloads(url: str, seconds: int, connections: int) -> Result:
    """``connections`` clients each downloading the file over and over on its own keep-alive connection."""
    with ThreadPoolExecutor(connections) as pool:
        results = list(pool.map(lambda _: sequential_downloads(url, seconds), range(connections)))
    return Result(
        sum(r.requests for r in results),
        sum(r.nbytes for r in results),
        max(r.seconds for r in results),
        sum(r.errors for r in results),
    )


def load(url: str, small: bool, seconds: int, script: Path) -> Result:
    """The small file by wrk (many connections), the large one by full downloads in parallel."""
    if small:
        return run_wrk(url, SMALL_CONNECTIONS, seconds, script, pinned=False)
    return parallel_downloads(url, seconds, LARGE_CONNECTIONS)


def start_replicas(
    stack: contextlib.ExitStack, base: Path, count: int, database_url: str, s3: dict[str, str], www: Path
) -> EdgeReplicas:
    """``count`` replicas on the shared database and bucket prefix behind an nginx that also serves ``www``."""
    print(f"starting {count} replica(s) and nginx ...", flush=True)
    replicas = EdgeReplicas(base, database_url=database_url, s3=s3, prefix=BUCKET_PREFIX, count=count, static_dir=www)
    stack.callback(replicas.stop)  # registered first: a start that fails half-way stops what did start
    return replicas.start()


def nginx_port(replicas: EdgeReplicas) -> int:
    assert replicas.nginx is not None and replicas.nginx.port is not None
    return replicas.nginx.port


def check_served(replicas: EdgeReplicas, samples: list[Sample]) -> None:
    """Every replica directly, nginx in front of them and nginx's static location serve the right bytes."""
    for sample in samples:
        for number, replica in enumerate(replicas.replicas, 1):
            verify(replica.port or 0, edge_path(sample), sample, f"replica {number}")
        verify(nginx_port(replicas), edge_path(sample), sample, "nginx in front of the replicas")
        verify(nginx_port(replicas), STATIC_PREFIX + sample.path.name, sample, "nginx's static location")


def measure(replicas: EdgeReplicas, samples: list[Sample], script: Path) -> dict[str, dict[str, Result]]:
    """Each size through nginx to the replicas and from nginx's static location, warm-up first;
    the CPU time all replicas used during the replicas' load."""
    results: dict[str, dict[str, Result]] = {}
    for sample in samples:
        small = sample.size <= MiB
        urls = {"replicas": replicas.url + edge_path(sample), "floor": replicas.url + STATIC_PREFIX + sample.path.name}
        print(f"  {sample.name}: {LOAD_SECONDS} s each for the replicas and the floor ...", flush=True)
        results[sample.name] = {}
        for who, url in urls.items():
            load(url, small, WARMUP_SECONDS, script)
            pids = [r.pid for r in replicas.replicas] if who == "replicas" else []
            used = sum(map(cpu_seconds, pids))
            result = load(url, small, LOAD_SECONDS, script)
            if pids:
                result = dataclasses.replace(result, cpu_seconds=sum(map(cpu_seconds, pids)) - used)
            results[sample.name][who] = result
    return results


def memory(replicas: EdgeReplicas) -> list[tuple[float, float]]:
    """Each replica's resident memory now and its peak, in MiB."""
    return [(status_mib(r.pid, "VmRSS"), status_mib(r.pid, "VmHWM")) for r in replicas.replicas]


def kill_window(replicas: EdgeReplicas, sample: Sample, script: Path) -> Window:
    """Small downloads through nginx: a steady window, then one in which replica ``VICTIM`` is killed
    with SIGKILL, started again on its port, and given ``AFTER_RESTART`` s before the load stops."""
    url = replicas.url + edge_path(sample)
    print(f"latency: {STEADY_SECONDS} s steady, then a window with replica {VICTIM + 1} killed and restarted ...")
    steady = run_wrk(url, WINDOW_CONNECTIONS, STEADY_SECONDS, script, pinned=False)
    cmd = wrk_command(url, WINDOW_CONNECTIONS, WINDOW_LIMIT, script, pinned=False)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        try:
            started = time.monotonic()
            time.sleep(BEFORE_KILL)
            replicas.kill(VICTIM)
            killed = time.monotonic() - started
            time.sleep(DOWN_SECONDS)
            restarted = time.monotonic() - started
            replicas.restart(VICTIM)
            answering = time.monotonic() - started
            time.sleep(AFTER_RESTART)
            wrk.send_signal(signal.SIGINT)  # wrk stops and reports what it measured so far
            out, err = wrk.communicate(timeout=60)
        except BaseException:
            wrk.kill()
            raise
    fault = parse_wrk(wrk.returncode, out, err)
    verify(replicas.replicas[VICTIM].port or 0, edge_path(sample), sample, "the restarted replica")
    return Window(steady, fault, killed, restarted, answering)


def rate(size: str, result: Result) -> tuple[str, float]:
    """What counts for a size: requests for the small file, bytes for the large one."""
    return ("req/s", result.rps) if SIZES[size] <= MiB else ("MB/s", result.mbps)


def print_throughput(results: dict[str, dict[str, dict[str, Result]]]) -> None:
    """Replicas and floor per topology and size, the ratios, and 3 replicas against 1."""
    head = f"{'topology':<11} {'file':<7} {'metric':<6} {'replicas':>10} {'floor':>10} {'replicas/floor':>15}"
    head += f" {'replica req/CPU s':>18}"
    print("\nthroughput through nginx: to the replicas vs the same nginx's static location (floor)")
    print(head + "\n" + "-" * len(head))
    for topology, by_size in results.items():
        for size, by_who in by_size.items():
            metric, edge = rate(size, by_who["replicas"])
            floor = rate(size, by_who["floor"])[1]
            per_cpu = f" {by_who['replicas'].per_cpu_second:18.1f}" if metric == "req/s" else ""
            print(f"{topology:<11} {size:<7} {metric:<6} {edge:10.1f} {floor:10.1f} {ratio(edge, floor):>15}{per_cpu}")
    one, three = results["1 replica"], results["3 replicas"]
    gains = (
        f"{size} {ratio(rate(size, three[size]['replicas'])[1], rate(size, one[size]['replicas'])[1])}" for size in one
    )
    print(f"3 replicas / 1 replica: {', '.join(gains)}")
    errors = {
        f"{topology}/{size}/{who}": r.errors
        for topology, by_size in results.items()
        for size, by_who in by_size.items()
        for who, r in by_who.items()
        if r.errors
    }
    print(f"errors (non-2xx, socket, timeouts): {errors or 'none'}")


def print_window(window: Window) -> None:
    head = f"{'window':<32} {'seconds':>8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  failed"
    print(f"\n4 KiB downloads through nginx to 3 replicas, wrk with {WINDOW_CONNECTIONS} connections")
    print(head + "\n" + "-" * len(head))
    for name, result in (("steady", window.steady), (f"replica {VICTIM + 1} killed -9, restarted", window.fault)):
        lat = result.latency
        assert lat is not None
        print(
            f"{name:<32} {result.seconds:8.1f} {result.requests:9d} {lat.p50:8.2f} {lat.p99:8.2f} {lat.max:8.1f}"
            f"  {result.describe_failures()}"
        )
    if window.steady.latency and window.fault.latency:
        print(f"p99 killed/steady: {ratio(window.fault.latency.p99, window.steady.latency.p99)}")
    print(
        f"replica {VICTIM + 1}: killed at {window.killed:.1f} s, started again at {window.restarted:.1f} s, "
        f"answering at {window.answering:.1f} s; the window ended {AFTER_RESTART:.0f} s later"
    )


def print_memory(memories: dict[str, list[tuple[float, float]]]) -> None:
    print("\nreplica memory, MiB (resident now / peak):")
    for when, replicas in memories.items():
        cells = ", ".join(f"replica {n} {now:.1f} / {peak:.1f}" for n, (now, peak) in enumerate(replicas, 1))
        print(f"  {when}: {cells}")
    print(f"  (replica {VICTIM + 1} after the kill window is the restarted process)")


def run() -> None:
    """Set up in a temp dir, measure, print; the ExitStack undoes everything in reverse."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk (make bench installs it)")
    started = time.monotonic()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="edge-ha-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        www = tmp / "www"
        www.mkdir()
        samples = make_samples(www, sizes=SIZES)
        script = tmp / "report.lua"
        script.write_text(WRK_REPORT)
        print("starting SeaweedFS and PostgreSQL ...", flush=True)
        s3 = stack.enter_context(SeaweedProcess()).info
        database_url = stack.enter_context(stack.enter_context(PostgresServer(tmp)).database())
        results, memories = {}, {}
        with contextlib.ExitStack() as first:
            one = start_replicas(first, tmp / "one", 1, database_url, s3, www)
            for sample in samples:  # once, through nginx: the second topology finds them in the shared store
                upload(nginx_port(one), sample, one.admin_token)
            check_served(one, samples)
            results["1 replica"] = measure(one, samples, script)
            memories["1 replica, after its loads"] = memory(one)
        three = start_replicas(stack, tmp / "three", 3, database_url, s3, www)
        check_served(three, samples)
        results["3 replicas"] = measure(three, samples, script)
        memories["3 replicas, after their loads"] = memory(three)
        window = kill_window(three, samples[0], script)
        memories["3 replicas, after the kill window"] = memory(three)
        print("\nreplicas on one PostgreSQL database and one SeaweedFS bucket, redirect_downloads = false;")
        print(f"4 KiB: wrk, 1 thread, {SMALL_CONNECTIONS} connections; 64 MiB: {LARGE_CONNECTIONS} parallel full")
        print(f"downloads; {LOAD_SECONDS} s each after {WARMUP_SECONDS} s of warm-up; nothing pinned")
        print_throughput(results)
        print_window(window)
        print_memory(memories)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total wall time: {time.monotonic() - started:.1f} s")


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    run_bench(run, failures=(StartFailed, NginxError), overall_timeout=OVERALL_TIMEOUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
