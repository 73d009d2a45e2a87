"""The fleet's demo app: a tiny real app that devices install, restart and health-check.

A version is four files: ``app.py`` (a stdlib HTTP server answering ``GET /health`` with
its version, on the port written in ``<install dir>/port``), ``health.py`` (the health
check: waits for the app and exits 0 only when it answers 200 with this version),
``restart.sh`` (stops the running instance by ``<install dir>/app.pid`` and starts
``current/app.py`` detached) and ``VERSION``. A broken version answers 500, so its health
check fails and the agent rolls back. ``padding`` adds a file of that many bytes, to make
a download long enough to interrupt.

The health check is a command, not a URL: on a machine running several agents each device
has its own port, while an app's definition is one for the whole fleet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from .content import publish_bundle

APP, BUNDLE, INSTALL_DIR = "fleet-demo", "fleet-demo", "/opt/fleet-demo"
RESTART, HEALTH, HEALTH_TIMEOUT = "sh restart.sh", "python3 health.py", 30
PORT_FILE, PID_FILE = "port", "app.pid"
STOP_TIMEOUT = 10.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

APP_PY = '''\
"""fleet-demo: answers GET /health with its version."""
import http.server, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "VERSION").read_text().strip()
STATUS = 500 if (HERE / "BROKEN").exists() else 200


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode() if self.path == "/health" else b"not found"
        self.send_response(STATUS if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int((Path(sys.argv[1]) / "port").read_text())
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

HEALTH_PY = '''\
"""The health check: exit 0 once the app answers 200 with this version; 1 on any other answer."""
import os, sys, time, urllib.error, urllib.request
from pathlib import Path

version = Path("VERSION").read_text().strip()
base = Path(os.environ["NODE_AGENT_APP_DIR"]).parent
url = f"http://127.0.0.1:{(base / 'port').read_text().strip()}/health"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    try:
        with opener.open(url, timeout=5) as resp:
            got = resp.read().decode()
            if got == version:
                print(f"{url} answered {resp.status} {got}")
                sys.exit(0)
            print(f"{url} answered version {got}, not {version}")
    except urllib.error.HTTPError as exc:
        print(f"{url} answered {exc.code}: unhealthy")
        sys.exit(1)
    except OSError:
        pass  # not listening yet: the agent's deadline bounds the wait
    time.sleep(0.1)
'''

RESTART_SH = """\
set -e
base=$(dirname "$NODE_AGENT_APP_DIR")
if [ -f "$base/app.pid" ]; then
    old=$(cat "$base/app.pid")
    kill "$old" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$old" 2>/dev/null || true
fi
nohup python3 "$base/current/app.py" "$base" >>"$base/app.log" 2>&1 </dev/null &
echo $! >"$base/app.pid"
"""


def app_files(version: str, *, broken: bool = False, padding: int = 0) -> dict[str, bytes]:
    """The files of one version, by their path in the source repo (``fleet-demo/<version>/...``)."""
    files = {"app.py": APP_PY, "health.py": HEALTH_PY, "restart.sh": RESTART_SH, "VERSION": version + "\n"}
    if broken:
        files["BROKEN"] = "this version answers 500 on /health\n"
    out = {f"{BUNDLE}/{version}/{name}": text.encode() for name, text in files.items()}
    if padding:
        out[f"{BUNDLE}/{version}/payload.bin"] = hashlib.shake_256(version.encode()).digest(padding)
    return out


def publish_version(
    distribution_url: str, admin_token: str, version: str, *, broken: bool = False, padding: int = 0
) -> dict[str, bytes]:
    """Deploy the version's files and sign bundle ``fleet-demo <version>``; answers the files."""
    files = app_files(version, broken=broken, padding=padding)
    kind = "a broken" if broken else "a"
    publish_bundle(distribution_url, admin_token, BUNDLE, version, files, f"{kind} fleet-demo release")
    return files


def app_create_args() -> list[str]:
    """``distribution fleet app create ...`` for the demo app."""
    return ["fleet", "app", "create", APP, "--bundle", BUNDLE, "--install-dir", INSTALL_DIR,
            "--restart", RESTART, "--health", HEALTH, "--health-timeout", str(HEALTH_TIMEOUT)]  # fmt: skip


def install_dir(install_root: Path) -> Path:
    """Where an agent with ``install_root`` installs the demo app."""
    return install_root / INSTALL_DIR.lstrip("/")


def prepare(install_root: Path, port: int) -> None:
    """Give the device's copy of the app its port (a file the app reads, in its install dir)."""
    base = install_dir(install_root)
    base.mkdir(parents=True, exist_ok=True)
    (base / PORT_FILE).write_text(f"{port}\n")


def current_version(install_root: Path) -> str | None:
    try:
        return Path(os.readlink(install_dir(install_root) / "current")).name
    except OSError:
        return None


def answer(install_root: Path) -> tuple[int, str] | None:
    """What the running app answers on ``/health`` (status, body); None when nothing listens."""
    port = (install_dir(install_root) / PORT_FILE).read_text().strip()
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:
        return None


def app_pid(install_root: Path) -> int | None:
    """The pid of the running demo app, from its pid file, when that process is alive."""
    try:
        pid = int((install_dir(install_root) / PID_FILE).read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else pid  # a zombie has stopped


def stop_app(install_root: Path) -> None:
    """Stop the demo app an agent started (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``)."""
    pid = app_pid(install_root)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while app_pid(install_root) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if app_pid(install_root) == pid:
            os.kill(pid, signal.SIGKILL)
