"""Fleet scale: heartbeats of many simulated devices against one real Distribution service.

Each simulated device speaks the device protocol through ``wire.fleet``, the bodies the
node agent sends: it enrolls with an enrollment token, then checks in every ``--interval``
seconds at its own phase of the interval (devices spread evenly, as jittered agents are).
Many devices share one process and one connection pool; the service is a real
``distribution serve`` started by ``devstack/``.

For each fleet size (``--devices 10000,50000``, cumulative: the next size enrolls the
difference) it prints the check-ins per second asked and answered, their latency p50 and
p99 (from the moment a device's check-in was due, so a service that falls behind shows it),
failures, and the service's RSS per 10,000 enrolled devices. The load generator shares
the machine with the service: its own CPU seconds are printed beside the service's so a
reader can tell which side ran out.

Then (``--part rollout``, ``bench/fleet_rollout.py``) a rollout of one release to 1,000
simulated devices through two real edges, timed against plain concurrent downloads of the
same bytes from the same edges; and (``--part agent``, ``bench/fleet_agent_cost.py``) the
memory and CPU of a real, idle ``node-agent run`` process.

    .venv/bin/python bench/fleet.py                       # all three parts, the issue's sizes
    .venv/bin/python bench/fleet.py --part heartbeats --devices 2000 --seconds 20
    .venv/bin/python bench/fleet.py --part rollout --rollout-devices 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from common import BenchError, run_bench
from fleet_agent_cost import agent_cost
from fleet_figures import cpu_seconds, own_cpu_seconds, vm_kib
from fleet_rollout import run_rollout

from devstack import rest
from devstack.services import DistributionProcess
from wire import fleet

APP = "till"
GROUP = "bench"
ENROLL_CONCURRENCY = 32
CHECK_IN_CONNECTIONS = 256


def heartbeat(index: int) -> bytes:
    """What an idle device reports: one app installed, no action under way."""
    beat = fleet.Heartbeat(
        agent_version="bench",
        uptime=1000 + index,
        cpu_percent=index % 100,
        memory_total=1 << 30,
        memory_used=(index % 512) << 20,
        disk_total=16 << 30,
        disk_free=8 << 30,
        apps={APP: fleet.InstalledApp("1.0.0")},
    )
    return json.dumps(beat.to_json()).encode()


class Fleet:
    """The simulated devices: their credentials and bodies, and the load they put on the service."""

    def __init__(self, service: DistributionProcess) -> None:
        self.service = service
        self.credentials: list[str] = []
        token = rest.request(
            "POST",
            f"{service.url}{fleet.FLEET_API}/enrollment-tokens",
            service.admin_token,
            {"group": GROUP, "tags": {"site": "bench"}, "expires_in": 24 * 3600},
        )
        status, answer = token
        if status != 201:
            raise BenchError(f"enrollment token: {status} {answer}")
        self.token = answer["token"]

    async def enroll(self, session: aiohttp.ClientSession, count: int) -> float:
        """Enroll devices until there are ``count``; answers the seconds it took."""
        begun = time.perf_counter()
        pending = iter(range(len(self.credentials), count))

        async def worker() -> None:
            for index in pending:
                body = fleet.EnrollRequest(self.token, f"dev-{index:06d}", {}, "bench").to_json()
                async with session.post(self.service.url + fleet.ENROLL, json=body) as resp:
                    if resp.status not in (200, 201):
                        raise BenchError(f"enroll dev-{index}: {resp.status} {(await resp.text())[:300]}")
                    answer = fleet.Enrollment.from_json(await resp.json())
                self.credentials.append(answer.credential)

        async with asyncio.TaskGroup() as workers:
            for _ in range(ENROLL_CONCURRENCY):
                workers.create_task(worker())
        return time.perf_counter() - begun

    async def check_ins(self, session: aiohttp.ClientSession, interval: float, seconds: float) -> dict[str, float]:
        """Every device checks in once per ``interval`` at its own phase, for ``seconds``."""
        devices = len(self.credentials)
        bodies = [heartbeat(i) for i in range(devices)]
        phases = sorted((random.random() * interval, i) for i in range(devices))
        latencies: list[float] = []
        lags: list[float] = []  # due time to the request's start: the load generator's own delay
        failures = 0
        url = self.service.url + fleet.CHECK_IN
        in_flight: set[asyncio.Task[None]] = set()

        async def one(index: int, due: float) -> None:
            nonlocal failures
            headers = {**fleet.device_headers(self.credentials[index]), "Content-Type": "application/json"}
            lags.append(time.perf_counter() - due)
            try:
                async with session.post(url, data=bodies[index], headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - due)
            else:
                failures += 1

        start = time.perf_counter()
        sent = 0
        rounds = 0
        while time.perf_counter() - start < seconds:
            base = start + rounds * interval
            for phase, index in phases:
                due = base + phase
                if due - start >= seconds:
                    break
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(index, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sent += 1
            rounds += 1
            if base + interval - start >= seconds:
                break
        if in_flight:
            await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - start
        if not latencies:
            raise BenchError(f"no check-in of {sent} succeeded")
        ordered, lagged = sorted(latencies), sorted(lags)
        return {
            "asked": devices / interval,
            "answered": len(latencies) / elapsed,
            "p50": statistics.median(ordered) * 1000,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "lag99": lagged[min(len(lagged) - 1, int(len(lagged) * 0.99))] * 1000,
            "failures": failures,
            "sent": sent,
        }


def check_in_buckets(service: DistributionProcess) -> dict[float, float]:
    """The service's own histogram of check-in durations (arrival to last byte), cumulative by bound (s)."""
    status, text = rest.request("GET", service.url + "/metrics", service.admin_token)
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}")
    found: dict[float, float] = {}
    for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines():
        if line.startswith("http_request_duration_seconds_bucket{") and 'route="fleet_check_in"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found[float(bound)] = float(line.rsplit(" ", 1)[1])
    return found


def service_p99(before: dict[float, float], after: dict[float, float]) -> str:
    """The bucket the service's p99 falls in, from two scrapes of its histogram."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    for bound, count in counts.items():
        if total and count >= 0.99 * total:
            return f"<= {bound * 1000:.0f} ms" if bound != float("inf") else "beyond the last bucket"
    return "no check-ins counted"


async def measure(args: argparse.Namespace, service: DistributionProcess) -> None:
    simulated = Fleet(service)
    pid = service.pid
    baseline = vm_kib(pid, "VmRSS")
    print(f"service RSS before enrollment: {baseline / 1024:.1f} MiB")
    connector = aiohttp.TCPConnector(limit=CHECK_IN_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        for count in args.devices:
            before = len(simulated.credentials)
            took = await simulated.enroll(session, count)
            print(f"\n{count:,} devices enrolled ({count - before:,} in {took:.1f} s)", flush=True)
            if args.warmup > 0:  # every device once: the service's copies of who they are are warm
                await simulated.check_ins(session, args.interval, args.warmup)
            cpu_service, cpu_self = cpu_seconds(pid), own_cpu_seconds()
            buckets = check_in_buckets(service)
            figures = await simulated.check_ins(session, args.interval, args.seconds)
            cpu_service, cpu_self = cpu_seconds(pid) - cpu_service, own_cpu_seconds() - cpu_self
            inside = service_p99(buckets, check_in_buckets(service))
            rss = vm_kib(pid, "VmRSS")
            print(
                f"  check-ins/s asked {figures['asked']:,.0f}, answered {figures['answered']:,.0f}"
                f" ({figures['sent']:,} sent, {figures['failures']:,} failed)\n"
                f"  latency from due time: p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms"
                f" (goal at 50,000 devices: p99 < 100 ms); of it the load generator's own delay"
                f" before sending, p99 {figures['lag99']:.1f} ms; inside the service (its own histogram,"
                f" arrival to last byte) p99 {inside}\n"
                f"  CPU seconds over {args.seconds:.0f} s: service {cpu_service:.1f}, load generator {cpu_self:.1f}\n"
                f"  service RSS {rss / 1024:.1f} MiB: {(rss - baseline) / 1024 / count * 10_000:.1f} MiB"
                f" per 10,000 devices above the empty service",
                flush=True,
            )


PARTS = ("heartbeats", "rollout", "agent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default=",".join(PARTS), help=f"what to run, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--devices", default="10000,50000", help="fleet sizes, ascending, comma-separated")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between a device's check-ins")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each size is measured")
    parser.add_argument("--warmup", type=float, help="seconds of check-ins before measuring (default: one interval)")
    parser.add_argument("--rollout-devices", type=int, default=1000, help="simulated devices the release goes to")
    parser.add_argument("--rollout-files", type=int, default=8, help="files in the release")
    parser.add_argument("--rollout-file-kib", type=int, default=128, help="size of each file, KiB")
    parser.add_argument("--rollout-poll", type=int, default=5, help="the devices' poll interval during the rollout, s")
    parser.add_argument("--rollout-connections", type=int, default=100, help="connections the devices share")
    parser.add_argument("--rollout-timeout", type=float, default=900.0, help="give up on the rollout after, s")
    parser.add_argument("--agent-poll", type=int, default=5, help="the idle agent's poll interval, s")
    parser.add_argument("--agent-seconds", type=float, default=60.0, help="how long the idle agent is measured")
    args = parser.parse_args()
    args.devices = sorted(int(n) for n in args.devices.split(","))
    args.warmup = args.interval if args.warmup is None else args.warmup
    parts = args.part.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"load generator event loop: {type(asyncio.new_event_loop()).__module__.split('.')[0]}")

    def service(base: Path, poll_interval: int | None = None) -> DistributionProcess:
        env = {} if poll_interval is None else {"DISTRIBUTION_FLEET_POLL_INTERVAL": str(poll_interval)}
        return DistributionProcess(base, env=env)

    def run() -> None:
        if "heartbeats" in parts:
            with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, service(Path(tmp)) as started:
                asyncio.run(measure(args, started))
        if "rollout" in parts:
            run_rollout(args, lambda base: service(base, args.rollout_poll))
        if "agent" in parts:
            agent_cost(args, service)
        print(f"\nload average (1, 5, 15 min): {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")

    run_bench(run, overall_timeout=3600)


if __name__ == "__main__":
    main()
