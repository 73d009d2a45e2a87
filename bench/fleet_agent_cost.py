"""The node agent's own cost (``bench/fleet.py --part agent``): a real ``node-agent run`` process,
enrolled with a real service, idle at a 5 s poll interval for 60 s.

The issue's bounds: RSS under 60 MiB, idle CPU near zero. Printed: the agent's peak and
current RSS (``VmHWM``, ``VmRSS``), its CPU seconds over the idle time (after its start-up,
which is printed apart), and the check-ins the service stored meanwhile, to show it polled.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import BenchError
from fleet_figures import cpu_seconds, vm_kib

from devstack import rest
from devstack.processes import find_program
from devstack.services import DistributionProcess
from wire.fleet import FLEET_API

NAME = "idle-agent"
SETTLE = 3.0  # seconds after start before the idle time is counted: imports and the first check-in


def agent_cost(args: Any, start: Callable[[Path], DistributionProcess]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-agent-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        service = stack.enter_context(start(base / "service"))

        def call(method: str, path: str, body: Any = None, expect: int = 200) -> Any:
            status, answer = rest.request(method, service.url + path, service.admin_token, body)
            if status != expect:
                raise BenchError(f"{method} {path}: {status} {answer}")
            return answer

        token = call("POST", f"{FLEET_API}/enrollment-tokens", {"group": "idle", "expires_in": 3600}, 201)["token"]
        data_dir = base / "agent"
        agent = find_program("node-agent")
        enroll = [agent, "enroll", "--server", service.url, "--token", token, "--name", NAME]
        enroll += ["--data-dir", str(data_dir)]
        done = subprocess.run(enroll, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"node-agent enroll: {done.stderr.strip()}")
        call("PUT", f"{FLEET_API}/devices/{NAME}", {"poll_interval": args.agent_poll})
        log = (base / "agent.log").open("wb")
        stack.callback(log.close)
        child = subprocess.Popen(
            [agent, "run", "--data-dir", str(data_dir), "--log-level", "WARNING"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stack.callback(_stop, child)
        time.sleep(SETTLE)
        startup = cpu_seconds(child.pid)
        idle_rss_start = vm_kib(child.pid, "VmRSS")
        beats_before = len(call("GET", f"{FLEET_API}/devices/{NAME}")["history"])
        time.sleep(args.agent_seconds)
        if child.poll() is not None:
            raise BenchError(f"node-agent run exited {child.returncode}: {(base / 'agent.log').read_text()[-500:]}")
        idle = cpu_seconds(child.pid) - startup
        peak, rss = vm_kib(child.pid, "VmHWM"), vm_kib(child.pid, "VmRSS")
        beats = len(call("GET", f"{FLEET_API}/devices/{NAME}")["history"]) - beats_before
    print(
        f"\nnode-agent run, idle at a {args.agent_poll} s poll interval for {args.agent_seconds:.0f} s"
        f" ({beats} check-ins stored meanwhile):\n"
        f"  RSS: peak (VmHWM) {peak / 1024:.1f} MiB, now (VmRSS) {rss / 1024:.1f} MiB"
        f" ({idle_rss_start / 1024:.1f} MiB when idle began; bound: < 60 MiB)\n"
        f"  CPU seconds: start-up and first check-in {startup:.2f}, idle {idle:.2f}"
        f" ({idle / args.agent_seconds * 100:.2f}% of one core)",
        flush=True,
    )


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
