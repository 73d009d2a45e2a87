"""An edge node as a real process, for end-to-end tests that talk to it only over HTTP.

``edge serve`` runs from this interpreter's environment on 127.0.0.1, on a port
chosen at run time, with its own data directory and admin token; its output goes
to a log file whose tail every start-up failure quotes. Tests stop it the way an
operator does, with SIGTERM, and a clean shutdown must exit 0.

    from tests.edge_process import EdgeProcess, edge_server  # noqa: F401
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import pytest

START_TIMEOUT = 30.0
# The edge gives running requests 60 s (shutdown_timeout) after SIGTERM; a test
# that needs that long holds a connection it forgot to close.
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
BIND_ATTEMPTS = 3
LOG_TAIL_LINES = 40
# Loopback is never reached through a proxy a developer has configured.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EdgeStartError(RuntimeError):
    """The edge did not answer its ping in time, or exited while starting."""


def find_edge() -> Path:
    """The ``edge`` console script installed next to this interpreter."""
    edge = Path(sys.executable).parent / "edge"
    if not (edge.is_file() and os.access(edge, os.X_OK)):
        pytest.fail(f"no 'edge' executable beside {sys.executable}: pip install -e '.[test]' into this environment")
    return edge


def free_port() -> int:
    """A loopback port the kernel reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any EDGE_* setting a developer has exported, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(extra)
    return env


class EdgeProcess:
    """One ``edge serve`` process; ``start()`` returns once it answers ``/artifactory/api/system/ping``.

    ``base_dir`` holds ``data/`` (the node's catalog and blobs) and ``edge.log``.
    Starting again after ``stop()`` reuses the data directory, and the port when
    it is still free, so a test can restart a node and find its artifacts.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        admin_token: str | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "edge.log"
        self.admin_token = admin_token or "adm_" + secrets.token_urlsafe(24)
        self.config = config
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the edge has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifactory_url(self) -> str:
        return f"{self.url}/artifactory"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the edge has not been started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    program = "edge"

    def executable(self) -> Path:
        return find_edge()

    def command(self, port: int) -> list[str]:
        cmd = [str(self.executable()), "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1"]
        cmd += ["--port", str(port)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        return cmd

    def environment(self) -> dict[str, str]:
        return clean_environment({"EDGE_ADMIN_TOKEN": self.admin_token, **self.extra_env})

    def start(self, timeout: float = START_TIMEOUT) -> EdgeProcess:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"the edge is already running as pid {self._proc.pid}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self._spawn(port)
            try:
                self._wait_ready(port, timeout)
            except EdgeStartError:
                if attempt < BIND_ATTEMPTS and self._lost_port_race():
                    port = free_port()
                    continue
                raise
            self.port = port
            return self
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self._log.write(f"--- {self.program} serve on port {port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.base_dir,
        )

    def _wait_ready(self, port: int, timeout: float) -> None:
        assert self._proc is not None
        ping = f"http://127.0.0.1:{port}/artifactory/api/system/ping"
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._close_log()
                raise EdgeStartError(self._failure(f"edge exited with status {code} while starting", port))
            try:
                with _DIRECT.open(ping, timeout=2) as resp:
                    if resp.status == 200 and resp.read() == b"OK":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self._kill()
                raise EdgeStartError(self._failure(f"edge did not answer {ping} within {timeout:.0f} s", port))
            time.sleep(POLL_INTERVAL)

    def _lost_port_race(self) -> bool:
        """Whether the failed start was another process taking the port between our check and the edge's bind."""
        return (
            self._proc is not None
            and self._proc.returncode not in (None, -signal.SIGKILL)
            and ("address already in use" in self.log_tail().lower())
        )

    def _failure(self, what: str, port: int) -> str:
        return f"{what}\ncommand: {' '.join(self.command(port))}\nlast lines of {self.log_path}:\n{self.log_tail()}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM, as an operator or a service manager does, and return at once."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit status once the process has exited; raises subprocess.TimeoutExpired after ``timeout``."""
        if self._proc is None:
            raise RuntimeError("the edge has not been started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` s. Answers the exit status."""
        if self._proc is None:
            return None
        self.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        self._close_log()
        return self._proc.returncode

    def _kill(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EdgeProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture
def edge_server(tmp_path: Path) -> Iterator[EdgeProcess]:
    """A started edge with an empty data directory; it must shut down cleanly (exit 0) on SIGTERM."""
    edge = EdgeProcess(tmp_path / "edge")
    edge.start()
    try:
        yield edge
    finally:
        code = edge.stop()
        # Shown by pytest when the test fails, next to the test's own output.
        print(f"edge log ({edge.log_path}), last lines:\n{edge.log_tail()}")
    if code != 0:
        pytest.fail(f"edge exited with status {code} on SIGTERM, not 0\n{edge.log_tail()}")
