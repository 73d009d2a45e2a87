"""Child services: start, wait until they answer, restart one that dies, stop them all on Ctrl-C or SIGTERM.

Each service runs in its own session, so the Ctrl-C a terminal sends to its foreground
group reaches only the supervisor, which then stops every child once, with SIGTERM (the
services' graceful stop: running requests finish). A second Ctrl-C kills them at once.
On Linux a child also gets SIGTERM if the supervisor dies without stopping it.

A child that exits on its own (a crash, ``kill -9`` while trying a fault story) is started
again on the same port and data dir after a backoff that doubles with each quick death,
so the rest of the topology keeps running and its registrations stay valid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import rest

PING = "/artifactory/api/system/ping"
START_TIMEOUT = 90.0  # the Distribution service makes its signing key on first start
STOP_TIMEOUT = 20.0
POLL_SECONDS = 0.1
LOG_TAIL_LINES = 25
# Restarts of a child that died: the first after RESTART_FIRST s, doubling up to RESTART_MAX;
# a child that stayed up STABLE_SECONDS starts over at RESTART_FIRST.
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
STABLE_SECONDS = 60.0
# Settings the services read from the environment: the topology sets its own, nothing is inherited.
SETTINGS_PREFIXES = ("EDGE_", "DISTRIBUTION_")


class StartFailed(RuntimeError):
    """A service exited while starting, or did not answer in time."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived: stop everything."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


def find_program(name: str) -> str:
    """A console script of this project: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StartFailed(f"no '{name}' command beside {sys.executable} or on PATH: run `make install` first")
    return found


def service_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any EDGE_*/DISTRIBUTION_* a developer exported, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(settings)
    return env


def _parent_death_signal() -> Any:
    """A preexec function asking Linux to send SIGTERM to the child when its parent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def serve_command(program: str, data_dir: Path, host: str, port: int) -> list[str]:
    """``edge serve`` or ``distribution serve`` on ``host:port`` with its own data directory."""
    return [find_program(program), "serve", "--data-dir", str(data_dir), "--host", host, "--port", str(port)]


class ServiceProcess:
    """One child service (``edge serve``, ``distribution serve``, nginx, ...); its output goes to ``log_path``.

    It is ready once ``GET {url}{probe}`` answers 200 (with the body ``expect``, when given):
    by default the Artifactory ping every service of this project answers.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path,
        *,
        probe: str = PING,
        expect: bytes | None = b"OK",
    ) -> None:
        self.name, self.argv, self.env = name, argv, dict(env)
        self.log_path, self.cwd = log_path, cwd
        self.probe, self.expect = probe, expect
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def poll(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:  # a restart: the last run's log handle
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in wait_stopped)
        self._log.write(f"--- {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._log_start = self._log.tell()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        self.started_at = time.monotonic()

    def restart(self) -> None:
        """Start again on the port the last run bound (port 0 would pick another, and the other
        services know this one by its URL); the data dir, and so every token, stays the same."""
        if self.url is not None and "--port" in self.argv:
            port = urllib.parse.urlsplit(self.url).port
            self.argv[self.argv.index("--port") + 1] = str(port)
        self.start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """The service's base URL once it answers its ping (the port it logged, so port 0 works)."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise StartFailed(f"{self.name} exited with status {code} while starting\n{self.log_tail()}")
            url = self.url or self._logged_url()
            if url is not None and self._answers(url):
                self.url = url
                return url
            if time.monotonic() > deadline:
                raise StartFailed(f"{self.name} did not answer within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def settle(self, deadline: float) -> None:
        """Let a child still starting get ready (or exit) before it is stopped: a service stopped in
        the middle of its start-up (making its signing key, say) cannot clean up behind it."""
        while self._proc is not None and self.url is None and self.poll() is None and time.monotonic() < deadline:
            url = self._logged_url()
            if url is not None and self._answers(url):
                self.url = url
                return
            time.sleep(POLL_SECONDS)

    def _logged_url(self) -> str | None:
        """The URL from the service's JSON ``... ready`` log line, which names the port it bound."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                lines = f.read().splitlines()
        except OSError:
            return None
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and str(entry.get("msg", "")).endswith(" ready") and "url" in entry:
                return str(entry["url"])
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join("    " + line for line in text.splitlines()[-lines:])
        return f"  last lines of {self.log_path}:\n{tail}"

    def terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _answers(self, base_url: str) -> bool:
        try:
            status, body = rest.request("GET", base_url + self.probe, timeout=2)
        except rest.CallFailed:
            return False
        return status == 200 and (self.expect is None or body == self.expect)

    def wait(self, timeout: float) -> int:
        """The exit status once the child has exited; raises subprocess.TimeoutExpired after ``timeout``."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc.wait(timeout)

    def wait_stopped(self, deadline: float) -> int | None:
        """Wait until ``deadline`` (monotonic), then kill; answers the exit status."""
        if self._proc is None:
            return None
        try:
            self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._proc.returncode


class Supervisor:
    """The children of one topology, and what Ctrl-C / SIGTERM do to them."""

    def __init__(self) -> None:
        self.children: list[ServiceProcess] = []
        self._stopping = False
        self._signals = 0

    def start(self, child: ServiceProcess) -> ServiceProcess:
        self.children.append(child)
        child.start()
        return child

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """Inside: the first SIGINT/SIGTERM raises Interrupted (unless already stopping); another kills all."""
        caught = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in caught}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if not self._stopping:
            raise Interrupted(signum)
        if self._signals >= 2:  # asked twice: do not wait for running requests
            for child in self.children:
                child.kill()

    def keep_running(self, say: Callable[[str], None]) -> None:
        """Restart every child that exits on its own, saying so, until a signal raises Interrupted.

        The backoff doubles while a child keeps dying soon after its start (a broken setting
        must not spin the machine) and starts over once it has stayed up ``STABLE_SECONDS``."""
        backoff = {child.name: RESTART_FIRST for child in self.children}
        while True:
            for child in self.children:
                code = child.poll()
                if code is None:
                    continue
                if time.monotonic() - child.started_at >= STABLE_SECONDS:
                    backoff[child.name] = RESTART_FIRST
                delay = backoff[child.name]
                backoff[child.name] = min(delay * 2, RESTART_MAX)
                say(f"{child.name} exited with status {code}; restarting it in {delay:.0f} s "
                    f"(log: {child.log_path})")  # fmt: skip
                time.sleep(delay)
                child.restart()
                try:
                    url = child.wait_ready()
                except StartFailed as exc:
                    say(f"{child.name} did not come back: {str(exc).splitlines()[0]}")
                    continue
                say(f"{child.name} is back at {url}")
            time.sleep(POLL_SECONDS * 5)

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM to every running child at once, wait for all (killing any still running after
        ``timeout``); answers the exit status of each child that was running (one that had exited
        on its own already was reported when it did)."""
        self._stopping = True
        running = [child for child in self.children if child.pid is not None and child.poll() is None]
        settled = time.monotonic() + START_TIMEOUT
        for child in running:
            child.settle(settled)
        for child in running:
            child.terminate()
        deadline = time.monotonic() + timeout
        codes = {child.name: child.wait_stopped(deadline) for child in running}
        for child in self.children:
            child.wait_stopped(deadline)  # closes the logs of the others
        return codes
