"""A test double of the fleet control plane that speaks ``wire/fleet.py``, and what agent tests share.

``ControlPlane`` is an aiohttp app served from its own thread (``ThreadedServer``): it
enrolls, answers check-ins with the actions a test sets, serves sources, keys and
collects feedback; it can also serve bundle files at ``/artifactory/{repo/path}`` (with
Range), standing in for an edge where a test is not about edges. The real control
plane is tested end to end against real agents after the merge.

``make_bundle`` builds a real signed manifest (plain gpg, tests/gpg_keys.py) and
``app_files`` a tiny real app: a Python script serving ``/health`` on a port, with a
``restart.sh`` that stops the running copy and starts this one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.flow import Flow
from agent.identity import Identity, save_identity
from agent.loop import Agent
from agent.settings import STOP_AT_ENV, load_settings
from agent.trust import DeviceTrust
from tests.fault_servers import ThreadedServer
from tests.gpg_keys import KeyFactory, TestKey
from wire import fleet
from wire.manifest import Manifest, ManifestArtifact, encode

REPO = "artifactory-edge-uploads"
CREDENTIAL = "device-credential-0001"


@dataclass
class ControlPlane:
    files_dir: Path
    poll_interval: int = 1
    actions: list[fleet.Action] = field(default_factory=list)
    sources: dict[str, fleet.Sources | list[fleet.Sources]] = field(default_factory=dict)
    feedback: list[fleet.Feedback] = field(default_factory=list)
    heartbeats: list[fleet.Heartbeat] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # "METHOD path" of every call
    keys: fleet.SigningKeys | None = None
    keys_digest: str = ""
    revoked: bool = False
    down: bool = False  # answer 503 to every device call
    refuse_check_ins: int = 0  # answer this many check-ins 400
    enrollment: fleet.Enrollment | None = None
    enroll_refusal: tuple[int, str] | None = None
    server: ThreadedServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def states(self, action_id: str) -> list[str]:
        with self.lock:
            return [f.state.value for f in self.feedback if f.action_id == action_id]

    def final(self, action_id: str) -> fleet.Feedback | None:
        with self.lock:
            done = [f for f in self.feedback if f.action_id == action_id and f.state in fleet.TERMINAL_STATES]
        return done[-1] if done else None

    def serve_file(self, target: str, data: bytes) -> None:
        path = self.files_dir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def app(self) -> web.Application:
        routes = web.RouteTableDef()

        def device_call(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                with self.lock:
                    self.requests.append(f"{request.method} {request.path}")
                if self.down:
                    return error(503, "control plane down")
                if request.headers.get(fleet.DEVICE_TOKEN_HEADER) != CREDENTIAL or self.revoked:
                    return error(401, "device credential revoked")
                return await handler(request)

            return wrapped

        @routes.post(fleet.ENROLL)
        async def enroll(request: web.Request) -> web.Response:
            req = fleet.EnrollRequest.from_json(await request.json())
            if self.enroll_refusal is not None:
                return error(*self.enroll_refusal)
            assert self.enrollment is not None
            return web.json_response(replace(self.enrollment, name=req.name).to_json())

        @routes.post(fleet.CHECK_IN)
        @device_call
        async def check_in(request: web.Request) -> web.Response:
            if self.refuse_check_ins > 0:
                self.refuse_check_ins -= 1
                return error(400, "Invalid heartbeat: unknown field(s) 'sensor'")
            beat = fleet.Heartbeat.from_json(await request.json())
            with self.lock:
                self.heartbeats.append(beat)
                answer = fleet.CheckIn(self.poll_interval, tuple(self.actions), self.keys_digest)
            return web.json_response(answer.to_json())

        @routes.post(fleet.FEEDBACK)
        @device_call
        async def feedback(request: web.Request) -> web.Response:
            report = fleet.Feedback.from_json(await request.json())
            with self.lock:
                self.feedback.append(report)
                if report.state in fleet.TERMINAL_STATES:
                    self.actions = [a for a in self.actions if a.action_id != report.action_id]
            return web.json_response({})

        @routes.get(fleet.DEVICE_API + "/actions/{action_id}/sources")
        @device_call
        async def sources(request: web.Request) -> web.Response:
            found = self.sources.get(request.match_info["action_id"])
            if isinstance(found, list):  # answers in turn, the last one from then on
                found = found.pop(0) if len(found) > 1 else found[0]
            return web.json_response(found.to_json()) if found else error(404, "no such action")

        @routes.get(fleet.KEYS)
        @device_call
        async def keys(request: web.Request) -> web.Response:
            return web.json_response(self.keys.to_json()) if self.keys else error(404, "no keys")

        @routes.get("/artifactory/api/system/ping")
        async def ping(request: web.Request) -> web.Response:
            return web.Response(text="OK")

        @routes.get("/artifactory/{target:.+}")
        async def download(request: web.Request) -> web.StreamResponse:
            path = self.files_dir / request.match_info["target"]
            return web.FileResponse(path) if path.is_file() else error(404, "Unable to find item")

        app = web.Application()
        app.add_routes(routes)
        return app


def error(status: int, message: str) -> web.Response:
    return web.json_response({"errors": [{"status": status, "message": message}]}, status=status)


def start_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path / "plane-files")
    plane.files_dir.mkdir()
    plane.server = ThreadedServer(plane.app).start()
    try:
        yield plane
    finally:
        plane.server.stop()


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    manifest: str
    signature: str
    files: dict[str, bytes]  # target -> bytes

    def sources(
        self, edges: list[fleet.EdgeOffer], token: str | Callable[[str], str] = "t", expires: int | None = None
    ) -> fleet.Sources:
        return fleet.Sources(
            bundle=self.name,
            version=self.version,
            manifest=self.manifest,
            signature=self.signature,
            edges=tuple(edges),
            files=tuple(
                fleet.FileSource(t, len(d), hashlib.sha256(d).hexdigest(), token(t) if callable(token) else token)
                for t, d in self.files.items()
            ),
            expires=expires if expires is not None else int(time.time() * 1000) + 3600_000,
        )


def artifact(target: str, data: bytes) -> ManifestArtifact:
    return ManifestArtifact(
        target=target,
        source=target,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),  # noqa: S324 - the manifest carries it for clients
        md5=hashlib.md5(data).hexdigest(),  # noqa: S324
    )


def make_bundle(keys: KeyFactory, key: TestKey, name: str, version: str, files: dict[str, bytes]) -> Bundle:
    """A bundle version whose files sit at ``REPO/name/version/<path>``, signed by ``key``."""
    targets = {f"{REPO}/{name}/{version}/{path}": data for path, data in files.items()}
    manifest = Manifest.create(name, version, [artifact(t, d) for t, d in targets.items()])
    text = encode(manifest).decode("utf-8")
    signature = keys.sign(key, text.encode("utf-8")).decode("ascii")
    return Bundle(name, version, text, signature, targets)


APP_SCRIPT = """\
import http.server, sys
VERSION = {version!r}
HEALTHY = {healthy!r}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200 if HEALTHY else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

RESTART_SCRIPT = """\
set -e
run={run}
if [ -f "$run/app.pid" ]; then
    old=$(cat "$run/app.pid")
    kill "$old" 2>/dev/null || true
    while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
fi
{restart_extra}
nohup {python} app.py {port} > "$run/app.log" 2>&1 &
echo $! > "$run/app.pid"
"""


def app_files(
    version: str, run_dir: Path, port: int, *, healthy: bool = True, restart_extra: str = ""
) -> dict[str, bytes]:
    return {
        "app.py": APP_SCRIPT.format(version=version, healthy=healthy).encode(),
        "restart.sh": RESTART_SCRIPT.format(
            run=run_dir, python=sys.executable, port=port, restart_extra=restart_extra
        ).encode(),
    }


def stop_app(run_dir: Path) -> None:
    pid_file = run_dir / "app.pid"
    if pid_file.is_file():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def enrolled_device(data_dir: Path, server: str, signing_keys: list[TestKey]) -> Identity:
    """A data dir as ``node-agent enroll`` leaves it, made in-process."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    DeviceTrust(data_dir).install(tuple(fleet.PublicKey(k.fingerprint, k.public) for k in signing_keys))
    identity = Identity(server, "dev-1", "till-0042", "pos-emea", CREDENTIAL, 1)
    save_identity(data_dir / "identity.json", identity)
    return identity


def wait_for(check: Callable[[], Any], timeout: float = 120, what: str = "the condition") -> Any:
    """Poll ``check`` until it answers something truthy; fail after ``timeout`` (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def make_flow(data_dir: Path, clock: Callable[[], datetime] | None = None, **settings: Any) -> Flow:
    """The update flow of an agent on an enrolled data dir, in this process (the run loop's worker)."""
    flow = Agent(load_settings(data_dir, settings)).flow
    return flow if clock is None else Flow(replace(flow.ctx, clock=clock))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NODE_AGENT = str(Path(sys.executable).parent / "node-agent")


def start_agent(*args: str, stop_at: str | None = None) -> subprocess.Popen[bytes]:
    """A real ``node-agent`` process (output in a file-like pipe read at the end)."""
    env = {k: v for k, v in os.environ.items() if k != STOP_AT_ENV}
    if stop_at:
        env[STOP_AT_ENV] = stop_at
    return subprocess.Popen([NODE_AGENT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_agent(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM, then the exit status and everything it logged."""
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return int(proc.returncode), out.decode("utf-8", "replace")


def exit_of(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The exit status and output of a ``node-agent`` that ends by itself."""
    wait_for(lambda: proc.poll() is not None, what="node-agent to exit")
    return stop_agent(proc)
