"""Devices for a local topology: real ``node-agent`` processes and the fleet commands an operator types.

``AgentProcess`` is one device: enrolled through the real ``node-agent enroll`` CLI, then
``node-agent run`` as a child process with its own data dir and install root (so several
agents share a machine), logging to a file; it is ready once its first check-in shows in
``GET /fleet/api/v1/devices/{name}`` as online. It can be killed with -9 and started
again on the same data dir, as a power cut and a reboot would do.

``FleetCli`` runs ``distribution fleet ...`` (and ``distribution distribute``) as a user
does, with the service's URL and token in the environment. ``prepare_fleet`` does what an
operator does once: edges trust the fleet's URL key, the demo app is defined, the group's
poll interval is set (1 s for tests), an enrollment token is made. Tests, ``make run`` and
benches share it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import fleet_app, rest
from .processes import ServiceProcess, StartFailed, find_program, service_environment
from .services import free_port

FLEET = "/fleet/api/v1"
CLI_TIMEOUT = 180.0
READY_TIMEOUT = 60.0  # a hang guard: a device checks in within a second of its start
STOP_TIMEOUT = 20.0
POLL_SECONDS = 0.2
STOP_AT_ENV = "NODE_AGENT_STOP_AT"
SETTLED = ("completed", "canceled", "rolled_back", "halted")


class FleetCli:
    """``distribution ...`` commands against one service, as its admin."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.program = find_program("distribution")
        self.env = service_environment({"DISTRIBUTION_URL": url, "DISTRIBUTION_TOKEN": token})

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.program, *args], env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
        )
        if check and done.returncode != 0:
            raise StartFailed(f"`distribution {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()[-800:]}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def get(self, path: str) -> Any:
        """A GET under ``/fleet/api/v1/`` (what ``--json`` commands print, without a process per poll)."""
        return rest.expect((200,), "GET", self.url + FLEET + path, self.token)

    def device(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/devices/{quote(name)}"))

    def deploy(self, version: str, *options: str) -> int:
        """``distribution fleet deploy fleet-demo VERSION ...``; answers the deployment's id."""
        return int(self.json("fleet", "deploy", fleet_app.APP, version, *options)["id"])

    def deployment(self, dep_id: int) -> dict[str, Any]:
        return dict(self.get(f"/deployments/{dep_id}"))

    def wait_deployment(self, dep_id: int, timeout: float) -> dict[str, Any]:
        """The deployment once it settled (completed, halted, canceled, rolled back); a hang guard after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            dep = self.deployment(dep_id)
            if dep["state"] in SETTLED:
                return dep
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {dep_id} did not get there within {timeout:.0f} s: {dep}")
            time.sleep(POLL_SECONDS)

    def distribute(self, name: str, version: str) -> dict[str, Any]:
        """``distribution distribute NAME VERSION --wait``: every registered edge holds it Completed."""
        final = self.json("distribute", name, version, "--wait")
        if final["status"] != "Completed":
            raise StartFailed(f"distribution of {name} {version} ended {final['status']}: {final}")
        return dict(final)


@dataclass(frozen=True)
class Enrollment:
    token: str
    group: str


def prepare_fleet(cli: FleetCli, group: str, poll_interval: int = 1) -> Enrollment:
    """What an operator does once: the fleet's URL key on every edge, the demo app defined, the
    group's poll interval set, an enrollment token made (all safe to repeat)."""
    pushed = cli.json("fleet", "url-key", "propagate")
    if pushed["status"] != "SUCCESS":
        raise StartFailed(f"the edges do not all trust the fleet's URL key: {pushed}")
    defined = cli.run(*fleet_app.app_create_args(), check=False)
    if defined.returncode != 0 and "409" not in defined.stderr + defined.stdout:
        raise StartFailed(f"`distribution fleet app create` exited {defined.returncode}: {defined.stderr.strip()}")
    cli.run("fleet", "group", "set", group, "--poll-interval", str(poll_interval))
    made = cli.json("fleet", "token", "create", "--group", group, "--expires", "7d")
    return Enrollment(str(made["token"]), group)


class AgentProcess:
    """One device: ``node-agent`` with ``base_dir/data`` and ``base_dir/root`` (its install root)."""

    def __init__(self, name: str, base_dir: Path, cli: FleetCli, *, app_port: int, **settings: Any) -> None:
        self.name, self.cli, self.app_port = name, cli, app_port
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.install_root = base_dir / "root"
        self.log_path = base_dir / "agent.log"
        self.settings = {"jitter": 0, **settings}  # written to agent.toml
        self.program = find_program("node-agent")
        self._child: ServiceProcess | None = None

    def enroll(self, enrollment: Enrollment, tags: dict[str, str] | None = None) -> str:
        """``node-agent enroll``: the device's own credential and the service's signing keys; its output."""
        fleet_app.prepare(self.install_root, self.app_port)
        tag_args = [arg for k, v in (tags or {}).items() for arg in ("--tag", f"{k}={v}")]
        argv = [self.program, "enroll", "--server", self.cli.url, "--token", enrollment.token,
                "--name", self.name, "--data-dir", str(self.data_dir), *tag_args]  # fmt: skip
        done = subprocess.run(argv, env=self._env(None), capture_output=True, text=True, timeout=CLI_TIMEOUT)
        if done.returncode != 0:
            raise StartFailed(f"node-agent enroll {self.name} exited {done.returncode}: {done.stderr.strip()}")
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.settings.items())
        (self.data_dir / "agent.toml").write_text(lines + f"install_root = {json.dumps(str(self.install_root))}\n")
        return done.stdout

    @property
    def enrolled_with(self) -> str | None:
        """The control plane's URL this device enrolled with (None: not enrolled)."""
        try:
            return str(json.loads((self.data_dir / "identity.json").read_text())["server"])
        except FileNotFoundError:
            return None

    def _env(self, stop_at: str | None) -> dict[str, str]:
        env = {k: v for k, v in service_environment({}).items() if k != STOP_AT_ENV}
        return env | ({STOP_AT_ENV: stop_at} if stop_at else {})

    def start(self, *, stop_at: str | None = None, wait: bool = True) -> AgentProcess:
        """``node-agent run``; with ``wait``, returns once the device checked in (online, seen anew)."""
        before = self.cli.device(self.name)["last_seen"] if wait else None
        argv = [self.program, "run", "--data-dir", str(self.data_dir)]
        if self._child is not None:
            self._child.wait_stopped(time.monotonic())  # the last run's: reaped, its log closed
        self._child = ServiceProcess(f"agent {self.name}", argv, self._env(stop_at), self.log_path, self.base_dir)
        self._child.start()
        if wait:
            self.wait_online(before)
        return self

    def wait_online(self, seen_before: str | None, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if (code := self.returncode) is not None:
                raise StartFailed(f"node-agent {self.name} exited with status {code}\n{self.log_tail()}")
            device = self.cli.device(self.name)
            if device["online"] and device["last_seen"] != seen_before:
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"node-agent {self.name} did not check in within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    @property
    def returncode(self) -> int | None:
        return None if self._child is None else self._child.poll()

    def wait_exit(self, timeout: float) -> int:
        """The exit status of an agent that stops by itself (revoked, killed at a step)."""
        assert self._child is not None
        code = self._child.wait(timeout)
        self._child.wait_stopped(time.monotonic())  # its log closed
        return code

    def kill(self) -> int | None:
        """kill -9, as a power cut would; answers the exit status."""
        if self._child is None:
            return None
        self._child.kill()
        return self._child.wait_stopped(time.monotonic() + STOP_TIMEOUT)

    def stop(self) -> int | None:
        """SIGTERM (the agent's clean stop, exit 0); the demo app it started keeps running."""
        if self._child is None:
            return None
        self._child.terminate()
        return self._child.wait_stopped(time.monotonic() + STOP_TIMEOUT)

    def stop_all(self) -> int | None:
        """Stop the agent, then the demo app it started: nothing of this device is left running."""
        code = self.stop()
        fleet_app.stop_app(self.install_root)
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def current(self) -> str | None:
        return fleet_app.current_version(self.install_root)

    def answer(self) -> tuple[int, str] | None:
        return fleet_app.answer(self.install_root)


DEMO_GROUP = "demo"
DEMO_RELEASES = {"1.0.0": False, "1.1.0": False, "2.0.0": True}  # version -> broken (its health check fails)
DEMO_POLL_SECONDS = 5


@dataclass(frozen=True)
class DemoFleet:
    """What ``make run`` started for the fleet: its agents, their group, the app versions on the edges."""

    agents: list[AgentProcess]
    group: str
    releases: dict[str, bool]  # version -> broken


def start_demo_fleet(run_dir: Path, cli: FleetCli, count: int, say: Any, agents: list[AgentProcess]) -> DemoFleet:
    """The demo app's versions signed and on every edge, and ``count`` agents enrolled (once: a
    second run finds them enrolled) and running, under ``run_dir/agents/``; each agent is added
    to ``agents`` as it starts, so a caller stops those even when a later step fails."""
    for version, broken in DEMO_RELEASES.items():
        fleet_app.publish_version(cli.url, cli.token, version, broken=broken)
        cli.distribute(fleet_app.BUNDLE, version)
    say(f"app {fleet_app.APP} {', '.join(DEMO_RELEASES)} signed and Completed on every edge")
    enrollment = prepare_fleet(cli, DEMO_GROUP, DEMO_POLL_SECONDS)
    for index in range(1, count + 1):
        name = f"device-{index}"
        agent = AgentProcess(name, run_dir / "agents" / name, cli, app_port=free_port())
        if agent.enrolled_with not in (None, cli.url):  # the service moved (port 0): a replaced box
            cli.run("fleet", "device", "revoke", name, check=False)
            shutil.rmtree(agent.data_dir)
        if agent.enrolled_with is None:
            agent.enroll(enrollment, {"site": "local"})
        agents.append(agent)
        agent.start()
        say(f"node-agent {name} checked in (data and install root in {agent.base_dir})")
    return DemoFleet(agents, DEMO_GROUP, DEMO_RELEASES)
