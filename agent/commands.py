"""The app's commands (pre_install, restart, health), run by ``sh -c`` with a deadline.

Each runs in a process group of its own, so a command that hangs is killed with every
child it started. Output goes to a temporary file, not a pipe: a restart command that
leaves a server running in the background does not keep the agent waiting for the
pipe to close, and only the tail is ever read (memory stays bounded).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from wire.fleet import MAX_MESSAGE, HealthCheck, clip_message

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # health URLs are local


@dataclass(frozen=True)
class Outcome:
    ok: bool
    output: str  # the tail of what the command printed, or why the check failed


def _tail(out: IO[bytes]) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - MAX_MESSAGE * 4))
    return clip_message(out.read().decode("utf-8", "replace"))


def run_command(command: str, cwd: Path, deadline: float, env: Mapping[str, str] | None = None) -> Outcome:
    """Run ``command``; ok when it exits 0 within ``deadline`` seconds; killed (with its group) after."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                ["sh", "-c", command],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(False, f"could not run {command!r}: {exc}")
        try:
            code = proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Outcome(
                False, clip_message(f"{_tail(out)}\nkilled after {deadline:g} s: {command!r} did not finish")
            )
        tail = _tail(out)
        if code != 0:
            return Outcome(False, clip_message(f"{tail}\n{command!r} exited with status {code}"))
        return Outcome(True, tail)


def check_url(url: str, timeout: float, interval: float = 0.5) -> Outcome:
    """Poll ``url`` until it answers 2xx or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(False, clip_message(f"{url} did not answer 2xx within {timeout:g} s: {last}"))
        try:
            with _DIRECT.open(url, timeout=max(0.1, min(left, 10))) as resp:
                if 200 <= resp.status < 300:
                    return Outcome(True, f"{url} answered {resp.status}")
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
            exc.close()
        except (OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def health_check(health: HealthCheck, cwd: Path, env: Mapping[str, str]) -> Outcome:
    """The app's health check: its command must exit 0 and its URL answer 2xx, both within ``timeout``."""
    if health.command is not None:
        outcome = run_command(health.command, cwd, health.timeout, env)
        if not outcome.ok:
            return outcome
    if health.url is not None:
        return check_url(health.url, health.timeout)
    return Outcome(True, "healthy")
