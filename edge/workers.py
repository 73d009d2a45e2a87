"""``edge serve --workers N``: N processes serving one port, and the supervisor that keeps them.

The supervisor binds N sockets to the port with ``SO_REUSEPORT`` (the kernel spreads new
connections over them evenly) and forks one worker per socket; it runs no event loop and
no thread, so forking is safe. It keeps every socket open itself, so connections that reach a
worker's socket while that worker is dead wait in its queue for the replacement instead of
being refused.

- Start: worker 1 starts first and alone, and does what the node's start does once (schema
  migrations, rolling back a commit a crash cut short, clearing staging left by transactions
  no longer open); the others start once it is ready. A worker that fails before the node is
  ready stops the node with its status.
- A worker that dies is restarted, after 0.5 s, doubling while it keeps dying soon after its
  start, up to 30 s; the counter of the node's changes (repository/generation.py) is bumped,
  in case it died between a commit and its own bump.
- SIGTERM or SIGINT: SIGTERM to every worker, which lets its running requests finish (up to
  ``shutdown_timeout``); any still running some seconds after that is killed. A second signal
  is passed on too: the workers then quit at once. Workers ignore the terminal's SIGINT (the
  supervisor passes the stop on), and are killed by the kernel if the supervisor dies.

What is per process in a worker stays correct across workers: copies (catalog entries, repos,
tokens, users, rules, keys) follow other workers' changes (repository/generation.py), locks
that order changes are held across processes (repository/file_locks.py), the steps of a
transaction keep nothing in memory between them, and background work (the scrub and its
sweep) runs under a lease in the database, once per node.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from repository.db import local_files_path
from repository.generation import SharedGeneration, generation_path
from repository.http.connections import ConnectionLimits
from repository.serve import BACKLOG, Listener, serve

from .app import create_app
from .settings import EdgeSettings

log = logging.getLogger(__name__)

RESTART_FIRST = 0.5
RESTART_MAX = 30.0
# A worker up this long has started well: its next death restarts it after RESTART_FIRST again.
STABLE_SECONDS = 60.0
# How long the node's first worker may take to start (migrations of a big catalog included).
FIRST_START_TIMEOUT = 600.0
# Killed if still running this long after shutdown_timeout, once asked to stop.
STOP_GRACE = 10.0
SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1


class WorkerFailed(Exception):
    pass


@dataclass
class Worker:
    number: int
    sock: socket.socket
    pid: int | None = None
    started: float = 0.0
    backoff: float = RESTART_FIRST
    due: float | None = None  # when a dead worker is restarted


@dataclass
class Supervisor:
    settings: EdgeSettings
    name: str
    limits: ConnectionLimits
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False

    def run(self) -> int:
        """Serve until a stop signal; answers the exit status: 0 when every worker stopped cleanly."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self.workers = [Worker(n, s) for n, s in enumerate(_listening(self.settings), start=1)]
        port = self.workers[0].sock.getsockname()[1]
        try:
            self._start_all()
        except WorkerFailed as exc:
            log.error("%s", exc)
            self._stop()
            return 1
        log.info(
            "%s ready with %d workers",
            self.name,
            len(self.workers),
            extra={"fields": {"url": f"http://{self.settings.host}:{port}", "port": port}},
        )
        while not self.stopping:
            info = signal.sigtimedwait(SIGNALS, self._wait())
            if info is not None and info.si_signo != signal.SIGCHLD:
                log.info("%s stopping: %d workers finish their running requests", self.name, len(self.workers))
                self.stopping = True
                break
            self._reap()
            self._restart_due()
        return self._stop()

    def _start_all(self) -> None:
        """Worker 1 alone, until it is ready; then the others, each until it is ready."""
        for worker in self.workers:
            ready_r, ready_w = os.pipe()
            pid = self._spawn(worker, ready_w, starts_node=worker.number == 1)
            try:
                ready = _wait_ready(ready_r, FIRST_START_TIMEOUT)
            finally:
                os.close(ready_r)
            if not ready:
                raise WorkerFailed(f"{self.name}: worker {worker.number} did not start (pid {pid}); see the log above")

    def _spawn(self, worker: Worker, ready_fd: int | None, *, starts_node: bool = False) -> int:
        """Fork ``worker``; it writes a byte to ``ready_fd`` once it accepts connections."""
        pid = os.fork()
        if pid == 0:  # the worker
            _worker_main(self, worker, ready_fd, starts_node)
        if ready_fd is not None:
            os.close(ready_fd)
        worker.pid, worker.started, worker.due = pid, time.monotonic(), None
        log.info("worker %d started", worker.number, extra={"fields": {"worker": worker.number, "pid": pid}})
        return pid

    def _wait(self) -> float:
        """Seconds until the next restart is due (or a while, when none is)."""
        dues = [w.due for w in self.workers if w.due is not None]
        return max(0.0, min(dues) - time.monotonic()) if dues else 60.0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            _bump_generation(self.settings)
            worker.pid = None
            if self.stopping:
                continue
            if time.monotonic() - worker.started >= STABLE_SECONDS:
                worker.backoff = RESTART_FIRST
            worker.due = time.monotonic() + worker.backoff
            log.error(
                "worker %d (pid %d) %s; restarting it in %.1f s",
                worker.number,
                pid,
                _exit_text(status),
                worker.backoff,
                extra={"fields": {"worker": worker.number, "pid": pid}},
            )
            worker.backoff = min(worker.backoff * 2, RESTART_MAX)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.due is not None and worker.due <= now and not self.stopping:
                self._spawn(worker, None)

    def _stop(self) -> int:
        """SIGTERM to every worker, then wait; a second stop signal is passed on; stragglers are killed."""
        self.stopping = True
        running = {w.pid: w for w in self.workers if w.pid is not None}
        for pid in running:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + STOP_GRACE
        clean = True
        while running:
            left = deadline - time.monotonic()
            if left <= 0:
                for pid in running:
                    log.error("worker (pid %d) did not stop in time: killed", pid)
                    _signal(pid, signal.SIGKILL)
                deadline = float("inf")
            info = signal.sigtimedwait(SIGNALS, min(left, 1.0) if left > 0 else 1.0)
            if info is not None and info.si_signo != signal.SIGCHLD:
                for pid in running:  # asked again: the workers quit now
                    _signal(pid, signal.SIGTERM)
            while running:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    running.clear()
                    break
                if pid == 0:
                    break
                if running.pop(pid, None) is not None and status != 0:
                    clean = False
                    log.error("worker (pid %d) %s", pid, _exit_text(status))
        for worker in self.workers:
            worker.sock.close()
        log.info("%s stopped", self.name)
        return 0 if clean else 1


def _listening(settings: EdgeSettings) -> list[socket.socket]:
    """One listening socket per worker on the same port (port 0: the first one's)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sockets: list[socket.socket] = []
    port = settings.port
    try:
        for _ in range(settings.workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((settings.host, port))
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"{settings.host}:{settings.port}"
        raise SystemExit(
            f"error: cannot listen on {where}: {exc.strerror or exc} (choose another with --port)"
        ) from None
    return sockets


def _worker_main(supervisor: Supervisor, worker: Worker, ready_fd: int | None, starts_node: bool) -> None:
    """The body of a forked worker; never returns."""
    code = 1
    try:
        parent = os.getppid()
        _die_with_parent()
        if os.getppid() != parent:  # the supervisor died before the request above
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the supervisor, which passes it on
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        for other in supervisor.workers:
            if other is not worker:
                other.sock.close()
        _name_logs(worker.number)
        settings = supervisor.settings
        app = create_app(settings, worker=worker.number, starts_node=starts_node)

        def ready() -> None:
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        listener = Listener(settings.host, settings.port, worker.sock, (signal.SIGTERM,), ready)
        serve(
            app,
            listener=listener,
            shutdown_timeout=settings.shutdown_timeout,
            limits=supervisor.limits,
            name=f"{supervisor.name} worker {worker.number}",
            event_loop=settings.event_loop,
        )
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", worker.number)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _wait_ready(fd: int, timeout: float) -> bool:
    """Whether the worker wrote its ready byte; False when it exited (or timed out) first."""
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable) and os.read(fd, 1) == b"1"


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the supervisor dies (kill -9 included)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None and sys.platform.startswith("linux"):
        ctypes.CDLL(libc_name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _name_logs(number: int) -> None:
    """Every log line of a worker says which one it is."""

    def stamp(record: logging.LogRecord) -> bool:
        record.fields = {**getattr(record, "fields", {}), "worker": number}
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(stamp)


def _bump_generation(settings: EdgeSettings) -> None:
    path = generation_path(local_files_path(settings.database_target, settings.data_dir))
    if path.exists():
        generation = SharedGeneration(path)
        generation.bump()
        generation.close()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def supervise(settings: EdgeSettings, name: str, limits: ConnectionLimits) -> None:
    """Run the node as ``settings.workers`` processes until SIGTERM/SIGINT; exits with their status."""
    code = Supervisor(settings, name, limits).run()
    if code:
        raise SystemExit(code)
