"""A real PostgreSQL server on loopback, for the tests and the benchmarks alike.

Edges and the Distribution service can keep their state in PostgreSQL so that replicas
share it; that code is tested against the server operators run, never a mock: Debian's
``postgresql`` package, initialised with ``initdb`` into a temp dir and run by ``pg_ctl``
on a free port. It listens on 127.0.0.1 only (and on a unix socket inside its own dir),
and trusts connections from there alone: nothing beyond this machine can reach it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

import psycopg
from psycopg import sql

from .processes import StartFailed
from .services import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# A replica's pool, its worker threads and the Distribution service's job runners all hold
# connections at once; several of each share one server in the HA tests.
MAX_CONNECTIONS = 200
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
PG_CTL_TIMEOUT = 60
LOG_TAIL_LINES = 40

StopMode = Literal["smart", "fast", "immediate"]


class PostgresCommandFailed(StartFailed):
    """initdb or pg_ctl (start, stop, restart) exited non-zero; the message carries the server log's tail."""


def find_bindir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: ``pg_config --bindir`` when it
    has them, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versioned), key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise StartFailed("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")


def _as_server_user() -> list[str]:
    """The prefix that runs a server tool as the ``postgres`` system user when this process is root.

    initdb and postgres refuse to run as root (a compromised server would own the machine),
    so under root they run as the ``postgres`` user Debian's package creates, in a directory
    that user owns. As anyone else they run as the caller.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        raise StartFailed("running as root needs setpriv (util-linux) to start PostgreSQL as 'postgres'")
    return ["setpriv", f"--reuid={SUPERUSER}", f"--regid={SUPERUSER}", "--init-groups", "--"]


class PostgresServer:
    """One PostgreSQL cluster in a directory of its own, removed by ``close()``.

    ``start()`` initialises the cluster on first use and starts it; ``stop("immediate")``
    ends every server process without a checkpoint (a crash, as far as the data is concerned:
    the next ``start()`` replays the WAL); ``restart()`` keeps the port. ``url(dbname)`` is a
    SQLAlchemy URL for psycopg 3; ``database()`` makes a fresh empty database and drops it after.
    """

    def __init__(self, parent: Path | None = None, *, max_connections: int = MAX_CONNECTIONS) -> None:
        # A root-owned private tree (pytest's basetemp is 0700) cannot be entered by the
        # 'postgres' user, so under root the cluster lives in the system temp dir instead.
        where = None if os.geteuid() == 0 else parent
        self.root = Path(tempfile.mkdtemp(prefix="postgres-", dir=where))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.max_connections = max_connections
        self.port = 0
        self._bindir = find_bindir()
        self._prefix = _as_server_user()
        self._give_to_server(self.root)

    def url(self, dbname: str = "postgres") -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:<port>/<dbname>``: SQLAlchemy over psycopg 3."""
        return self.dsn(dbname).replace("postgresql://", "postgresql+psycopg://", 1)

    def dsn(self, dbname: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<dbname>`` for libpq and bare psycopg (trust: no password)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        """Start the server (initialising the cluster first if there is none yet) and wait until
        it accepts connections; StartFailed with the log's tail otherwise."""
        if self.port:
            self._pg_ctl("start", "-w", "-l", str(self.log_path))
            return self
        self._initdb()
        attempts_left = START_ATTEMPTS
        while True:
            self.port = free_port()
            self._configure()
            try:
                self._pg_ctl("start", "-w", "-l", str(self.log_path))
                return self
            except PostgresCommandFailed:
                attempts_left -= 1
                if not attempts_left or "could not bind" not in self.log_tail():
                    raise

    def stop(self, mode: StopMode = "fast") -> None:
        """``pg_ctl stop -m <mode>``: ``fast`` rolls back open transactions and checkpoints,
        ``immediate`` kills every server process at once and leaves recovery to the next start."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop with ``mode`` and start again on the same port and data."""
        self._pg_ctl("restart", "-w", "-m", mode, "-l", str(self.log_path))

    def is_running(self) -> bool:
        return bool(self.port) and self._run([self._tool("pg_ctl"), "status", "-D", str(self.data_dir)]).returncode == 0

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database ``t_<uuid>``, as a URL; dropped afterwards, its connections cut.
        A server that was left stopped is started again for either step."""
        name = f"t_{uuid.uuid4().hex}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield self.url(name)
        finally:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server if it runs (fast) and remove its directory."""
        try:
            if self.is_running():
                self.stop("fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _tool(self, name: str) -> str:
        return str(self._bindir / name)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        # pg_ctl's own -t bounds its waits; the timeout here only catches a hung tool.
        return subprocess.run(
            [*self._prefix, *argv], cwd=self.root, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT + 30
        )

    def _pg_ctl(self, *args: str) -> None:
        done = self._run([self._tool("pg_ctl"), *args, "-D", str(self.data_dir), "-t", str(PG_CTL_TIMEOUT)])
        if done.returncode != 0:
            raise PostgresCommandFailed(
                f"pg_ctl {args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}\n"
                f"log tail ({self.log_path}):\n{self.log_tail()}"
            )

    def _initdb(self) -> None:
        argv = [self._tool("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8", "--locale=C"]
        done = self._run([*argv, "--auth=trust", "--no-sync", "--no-instructions"])
        if done.returncode != 0:
            raise PostgresCommandFailed(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _configure(self) -> None:
        """Loopback only, a port of our own, a socket inside our dir, room for many connections.

        Written to postgresql.auto.conf, which PostgreSQL reads last, so it wins over initdb's file.
        Local connections are trusted, remote ones have no line at all in pg_hba.conf.
        """
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "unix_socket_permissions": "0700",
            "max_connections": str(self.max_connections),
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        conf = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        self._write(self.data_dir / "postgresql.auto.conf", conf)
        self._write(self.data_dir / "pg_hba.conf", f"local all all trust\nhost all all {HOST}/32 trust\n")

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        self._give_to_server(path)

    def _give_to_server(self, path: Path) -> None:
        """Under root, hand ``path`` to the user the server runs as (it must own its files)."""
        if self._prefix:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _admin(self, statement: sql.Composed) -> None:
        """Run ``statement`` as the superuser, starting the server first if a test left it stopped."""
        if not self.is_running():
            self.start()
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(statement)
