"""One edge or one Distribution service as a real process, for tests and benchmarks.

``edge serve`` / ``distribution serve`` run from this interpreter's environment on
127.0.0.1, on a port chosen at run time, with their own data directory and admin
token; output goes to a log file whose tail every start-up failure quotes. They are
stopped the way an operator stops them, with SIGTERM; a clean shutdown exits 0.

Starting again after ``stop()`` reuses the data directory, and the port while it is
still free, so a restarted node keeps its artifacts and its URL: a Distribution service
retrying an edge that was down finds it again.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .processes import ServiceProcess, StartFailed, serve_command, service_environment

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
# The services give running requests 60 s (shutdown_timeout) after SIGTERM; a caller that
# needs that long holds a connection it forgot to close.
STOP_TIMEOUT = 20.0
BIND_ATTEMPTS = 3
SOURCE_REPO = "releases-local"


def free_port() -> int:
    """A loopback port the kernel reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class EdgeProcess:
    """One ``edge serve`` process; ``start()`` returns once it answers its ping.

    ``base_dir`` holds ``data/`` (the node's catalog and blobs) and the log.
    """

    program = "edge"

    def __init__(
        self,
        base_dir: Path,
        *,
        admin_token: str | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.base_dir = Path(base_dir)
        # one process per edge keeps a local topology light; more: edge/workers.py
        self.workers = workers
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / f"{self.program}.log"
        self.admin_token = admin_token or "adm_" + secrets.token_urlsafe(24)
        self.config = config
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self._child: ServiceProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"the {self.program} service has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def artifactory_url(self) -> str:
        return f"{self.url}/artifactory"

    @property
    def pid(self) -> int:
        if self._child is None or self._child.pid is None:
            raise RuntimeError(f"the {self.program} service has not been started")
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.poll()

    def command(self, port: int) -> list[str]:
        cmd = serve_command(self.program, self.data_dir, HOST, port)
        return cmd if self.config is None else [*cmd, "--config", str(self.config)]

    def environment(self) -> dict[str, str]:
        return service_environment(
            {"EDGE_ADMIN_TOKEN": self.admin_token, "EDGE_WORKERS": str(self.workers), **self.extra_env}
        )

    def worker_pids(self) -> list[int]:
        """The pids of the workers serving the port now (Linux); none for a single process."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []

    def start(self, timeout: float = START_TIMEOUT) -> EdgeProcess:
        """Start and wait until it answers; another port if one was taken between choosing and binding."""
        if self.returncode is None and self._child is not None:
            raise RuntimeError(f"the {self.program} service is already running as pid {self.pid}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self._spawn(port)
            assert self._child is not None
            try:
                self._child.wait_ready(timeout)
                self._wait_for_workers(timeout)
            except StartFailed:
                self._child.wait_stopped(time.monotonic())  # killed if it still runs; its log closed
                if attempt < BIND_ATTEMPTS and "address already in use" in self.log_tail().lower():
                    port = free_port()
                    continue
                raise
            self.port = port
            return self
        raise AssertionError("unreachable")

    def _wait_for_workers(self, timeout: float) -> None:
        """Several workers answer the ping from the first one's start: wait for the supervisor's word
        that all of them are (edge/workers.py)."""
        if self.workers == 1:
            return
        deadline = time.monotonic() + timeout
        while f"ready with {self.workers} workers" not in self.log_tail(400):
            if self.returncode is not None or time.monotonic() > deadline:
                raise StartFailed(f"the {self.program} workers did not all start\n{self.log_tail()}")
            time.sleep(0.05)

    def _spawn(self, port: int) -> None:
        if self._child is not None:
            self._child.wait_stopped(time.monotonic())  # reaped after a kill, its log closed
        self._child = ServiceProcess(self.program, self.command(port), self.environment(), self.log_path, self.base_dir)
        self._child.url = f"http://{HOST}:{port}"
        self._child.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM, as an operator or a service manager does, and return at once."""
        if self._child is not None:
            self._child.terminate()

    def wait(self, timeout: float) -> int:
        """The exit status once the process has exited; raises subprocess.TimeoutExpired after ``timeout``."""
        if self._child is None:
            raise RuntimeError(f"the {self.program} service has not been started")
        return self._child.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` s. Answers the exit status."""
        if self._child is None:
            return None
        self._child.terminate()
        return self._child.wait_stopped(time.monotonic() + timeout)

    def __enter__(self) -> EdgeProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class DistributionProcess(EdgeProcess):
    """One ``distribution serve`` process with the source repos ``repos`` (comma-separated).

    ``base_dir`` holds ``data/`` (catalog, blobs, bundles, GnuPG home) and the log; its
    bundles and keys survive a restart.
    """

    program = "distribution"

    def __init__(
        self,
        base_dir: Path,
        *,
        admin_token: str | None = None,
        repos: str = SOURCE_REPO,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, admin_token=admin_token, config=config, env=env)
        self.repos = repos

    def environment(self) -> dict[str, str]:
        return service_environment(
            {"DISTRIBUTION_ADMIN_TOKEN": self.admin_token, "DISTRIBUTION_REPOS": self.repos, **self.extra_env}
        )

    def __enter__(self) -> DistributionProcess:
        self.start()
        return self
