"""nginx as a real process in front of edges, running the shipped ``nginx/edge.conf`` (tests, benchmarks).

The shipped file is a server block for ``conf.d/``. ``NginxProcess`` wraps it in a main
config of its own (one worker, no daemon; pid, logs and temp files in one prefix
directory, so no root-owned path is needed) and rewrites only the three per-site lines the
file's header names: ``listen 80;`` becomes 127.0.0.1 and a port chosen at run time, the
upstream's ``server edge-1:8082; server edge-2:8082;`` become the edges given, and the blob
``alias`` becomes the edge's blob directory. A line missing from the shipped file fails
loudly rather than leaving a config that points elsewhere. A benchmark may add one
location of plain files (``static_dir``), so the same nginx measures the floor.

Run as root, the workers run as root too (``user root;``): the default ``nobody`` could reach
neither the blobs nor nginx's own temp paths under 0700 temp directories (pytest's, mkdtemp's).
Run as another user, nginx and its workers simply stay that user.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .processes import ServiceProcess, StartFailed
from .services import HOST, free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONF = ROOT / "nginx" / "edge.conf"
LISTEN_LINE = "    listen 80;\n"
UPSTREAM_LINES = "    server edge-1:8082;\n    server edge-2:8082;\n"
ALIAS_LINE = "        alias /var/lib/edge/blobs/blobs/;\n"
BLOBS_LOCATION_LINE = "    location /_blobs/ {\n"
STATIC_PREFIX = "/_static/"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
BIND_ATTEMPTS = 3


class NginxError(RuntimeError):
    """nginx is missing, its config does not fit, or it did not start."""


def find_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise NginxError("nginx is not installed: apt-get install nginx (make test and make bench install it)")
    return found


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise NginxError(f"{SHIPPED_CONF} no longer has exactly one {old.strip()!r}: update devstack/nginx.py")
    return text.replace(old, new)


def static_location(static_dir: Path) -> str:
    """Plain files from ``static_dir`` under ``STATIC_PREFIX``, by sendfile: what this very nginx
    does without an edge behind it, the floor a benchmark holds the edges against."""
    return (
        f"    location {STATIC_PREFIX} {{\n        alias {static_dir.resolve()}/;\n"
        "        sendfile on;\n        tcp_nopush on;\n    }\n\n"
    )


def site_config(
    port: int, edge_ports: Sequence[int], blob_dir: Path, shipped: str | None = None, static_dir: Path | None = None
) -> str:
    """The shipped server block with its per-site lines for this machine (and ``static_location``
    when ``static_dir`` is given)."""
    text = SHIPPED_CONF.read_text() if shipped is None else shipped
    text = _replace_once(text, LISTEN_LINE, f"    listen {HOST}:{port};\n")
    text = _replace_once(text, UPSTREAM_LINES, "".join(f"    server {HOST}:{p};\n" for p in edge_ports))
    if static_dir is not None:
        text = _replace_once(text, BLOBS_LOCATION_LINE, static_location(static_dir) + BLOBS_LOCATION_LINE)
    return _replace_once(text, ALIAS_LINE, f"        alias {blob_dir.resolve()}/;\n")


def main_config(prefix: Path, site: Path) -> str:
    """The main config around the site: everything nginx writes stays under ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
{temps}    default_type application/octet-stream;
    keepalive_requests 1000000;
    include {site};
}}
"""


class NginxProcess:
    """One nginx in front of ``edge_ports``; ``start()`` returns once a ping through it reaches an edge."""

    def __init__(
        self,
        prefix: Path,
        edge_ports: Sequence[int],
        blob_dir: Path,
        cpus: Sequence[str] = (),
        static_dir: Path | None = None,
    ) -> None:
        self.prefix = Path(prefix)
        self.edge_ports = list(edge_ports)
        self.blob_dir = Path(blob_dir)
        self.cpus = list(cpus)  # e.g. ["taskset", "-c", "0"] in front of the command
        self.static_dir = static_dir  # served under STATIC_PREFIX, beside the edges (benchmarks)
        self.port: int | None = None
        self._child: ServiceProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("nginx has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._child is None or self._child.pid is None:
            raise RuntimeError("nginx has not been started")
        return self._child.pid

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no error log written)"

    def write_config(self, port: int) -> Path:
        self.prefix.mkdir(parents=True, exist_ok=True)
        site = self.prefix / "edge.conf"
        site.write_text(site_config(port, self.edge_ports, self.blob_dir, static_dir=self.static_dir))
        conf = self.prefix / "nginx.conf"
        conf.write_text(main_config(self.prefix, site))
        return conf

    def command(self, conf: Path) -> list[str]:
        return [*self.cpus, find_nginx(), "-p", str(self.prefix), "-c", str(conf), "-e", str(self.error_log)]

    def start(self) -> NginxProcess:
        for attempt in range(1, BIND_ATTEMPTS + 1):
            port = free_port()
            command = self.command(self.write_config(port))
            self.stop()
            self._child = ServiceProcess("nginx", command, os.environ, self.prefix / "stdout.log", self.prefix)
            self._child.url = f"http://{HOST}:{port}"
            self._child.start()
            try:
                self._child.wait_ready(START_TIMEOUT)
            except StartFailed:
                self.stop()
                if attempt < BIND_ATTEMPTS and "Address already in use" in self.error_log_text():
                    continue  # another process took the port between our check and nginx's bind
                break
            self.port = port
            return self
        raise NginxError(f"nginx did not start; last lines of {self.error_log}:\n{self.error_log_text()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM (nginx's fast shutdown), SIGKILL if it is still there after ``STOP_TIMEOUT``."""
        if self._child is None:
            return None
        self._child.terminate()
        return self._child.wait_stopped(time.monotonic() + STOP_TIMEOUT)

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
