"""The runtime inventory end to end: a real ``node-agent run`` reporting to a real ``distribution
serve``. Once the whole way (released, distributed to a real edge, deployed; the agent downloads,
verifies, installs and restarts it); elsewhere the app is installed by the agent's own installer
(versions/, ``current``, the verified file list kept) to keep each test short. Its script runs, and
the service traces it to the signed bundle version that shipped those bytes; what no bundle
shipped is unknown, and edits show as drift."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apps import AppRegistry
from agent.drift import keep_manifest
from agent.installer import Installer
from devstack import rest
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from tests.agent_plane import exit_of, make_bundle, start_agent, stop_agent, wait_for
from tests.distribution_process import distribution_server_fixture  # noqa: F401
from tests.edge_setup import http, trust
from tests.gpg_keys import KeyFactory, KeySet
from wire.fleet import AppSpec

SLEEP = shutil.which("sleep") or "/bin/sleep"
DISTRIBUTION = str(Path(sys.executable).parent / "distribution")
RUNTIME = "/fleet/api/v1/runtime"


def app_files(version: str) -> dict[str, bytes]:
    script = f"# till {version}\nimport time\nwhile True:\n    time.sleep(1)\n"
    return {"app.py": script.encode(), "till.conf": f"version={version}\n".encode()}


RESTART = """\
if [ -f "$RUN/app.pid" ]; then kill "$(cat "$RUN/app.pid")" 2>/dev/null || true; fi
nohup {python} app.py > /dev/null 2>&1 &
echo $! > "$RUN/app.pid"
"""


class Site:
    """The service, one enrolled device dir, and the app's processes started on the device."""

    def __init__(self, service: DistributionProcess, tmp_path: Path, key_factory: KeyFactory, keys: KeySet) -> None:
        self.service, self.tmp, self.key_factory, self.keys = service, tmp_path, key_factory, keys
        self.data_dir = tmp_path / "device"
        self.install_dir = tmp_path / "opt" / "till"
        self.spec = AppSpec("till", "till-app", str(self.install_dir))
        self.processes: list[subprocess.Popen[bytes]] = []

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, answer = http(method, self.service.url + path, self.service.admin_token, body)
        assert status == expect, answer
        return answer

    def cli(self, *args: str) -> Any:
        env = {**os.environ, "DISTRIBUTION_URL": self.service.url, "DISTRIBUTION_TOKEN": self.service.admin_token}
        done = subprocess.run([DISTRIBUTION, *args, "--json"], capture_output=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def release(self, version: str, extra: dict[str, bytes] | None = None) -> None:
        """A signed bundle version ``till-app`` on the service, holding the app's files."""
        for path, data in (app_files(version) | (extra or {})).items():
            url = f"{self.service.url}/artifactory/{SOURCE_REPO}/till-app/{version}/{path}"
            status, answer = rest.request("PUT", url, self.service.admin_token, data=data)
            assert status == 201, answer
        spec = {"queries": [{"pattern": f"{SOURCE_REPO}/till-app/{version}/*"}]}
        body = {"name": "till-app", "version": version, "sign_immediately": True, "spec": spec}
        self.call("POST", "/distribution/api/v1/release_bundle", body, expect=201)

    def enroll(self) -> None:
        self.call("PUT", "/fleet/api/v1/groups/pos", {"poll_interval": 1})
        token = self.call("POST", "/fleet/api/v1/enrollment-tokens", {"group": "pos", "expires_in": "1h"}, 201)
        self.cli("runtime", "configure", "pos", "--interval", "1")
        args = ["--server", self.service.url, "--token", token["token"], "--name", "till-1"]
        code, out = exit_of(start_agent("enroll", *args, "--data-dir", str(self.data_dir)))
        assert code == 0, out
        (self.data_dir / "agent.toml").write_text("drift_interval = 1\n")

    def install(self, version: str) -> None:
        """Install a version as the agent's flow does once it verified the bundle, and run its script."""
        files = app_files(version)
        bundle = make_bundle(self.key_factory, self.keys.alice, "till-app", version, files)
        staged = self.tmp / f"staged-{version}"
        staged.mkdir()
        for rel, data in files.items():
            (staged / rel).write_bytes(data)
        installer = Installer(self.spec)
        installer.build(version, {rel: staged / rel for rel in files})
        keep_manifest(self.data_dir, "till", version, bundle.manifest)
        installer.switch(version)
        AppRegistry(self.data_dir).record("till", str(self.install_dir), None)
        self.start([sys.executable, "app.py"], cwd=installer.current)

    def start(self, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.processes.append(subprocess.Popen(argv, cwd=cwd))
        return self.processes[-1]

    def where(self, version: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"{RUNTIME}/where/till-app/{version}"))

    def checked_in(self) -> str | None:
        """When the device last checked in (None: never)."""
        return self.call("GET", "/fleet/api/v1/devices/till-1")["last_seen"]


@pytest.fixture(name="site")
def site_fixture(
    distribution_server: DistributionProcess, tmp_path: Path, key_factory: KeyFactory, keys: KeySet
) -> Iterator[Site]:
    site = Site(distribution_server, tmp_path, key_factory, keys)
    yield site
    for proc in site.processes:
        proc.kill()
        proc.wait()


def test_what_runs_is_traced_to_its_bundle_version_and_what_no_bundle_shipped_is_unknown(site: Site) -> None:
    site.release("1.0.0")
    site.enroll()
    site.install("1.0.0")
    rogue = site.tmp / "sleep-copy"
    shutil.copy(SLEEP, rogue)
    with open(rogue, "ab") as f:
        f.write(b"\0")  # a copy of a system binary, changed: no bundle ever shipped these bytes
    rogue_sha = hashlib.sha256(rogue.read_bytes()).hexdigest()
    app, rogue_run = site.processes[0], site.start([str(rogue), "600"])
    agent = start_agent("run", "--data-dir", str(site.data_dir))
    try:
        found = wait_for(lambda: site.where("1.0.0"), what="runtime where to find till-app 1.0.0")
        assert [(w["device"], w["script"], w["path"]) for w in found] == [
            ("till-1", "app.py", f"{SOURCE_REPO}/till-app/1.0.0/app.py")
        ]
        assert site.cli("runtime", "where", "till-app", "1.0.0") == found

        unknown = wait_for(
            lambda: [u for u in site.cli("runtime", "unknown", "--group", "pos") if u["sha256"] == rogue_sha],
            what="the modified binary to be unknown",
        )
        assert unknown == [
            {"sha256": rogue_sha, "path": str(rogue), "devices": ["till-1"], "device_count": 1, "processes": 1}
        ]
        device = site.cli("runtime", "device", "till-1")
        # by pid: other tests' processes on this machine may run an app.py of their own
        by_pid = {p["pid"]: p for p in device["processes"]}
        assert by_pid[app.pid]["script"] == "app.py"
        assert by_pid[app.pid]["provenance"] == [
            {"bundle": "till-app", "version": "1.0.0", "path": f"{SOURCE_REPO}/till-app/1.0.0/app.py"}
        ]
        assert by_pid[rogue_run.pid]["exe"] == str(rogue) and by_pid[rogue_run.pid]["unknown"] is True
        events = site.cli("runtime", "events", "--kind", "unknown_executable", "--device", "till-1")
        assert [e["path"] for e in events if e["sha256"] == rogue_sha] == [str(rogue)]
        assert site.cli("runtime", "drift") == []

        conf = site.install_dir / "versions" / "1.0.0" / "till.conf"
        conf.write_bytes(b"version=tampered\n")
        drift = wait_for(lambda: site.cli("runtime", "drift"), what="the edited file to show as drift")
        assert [(d["device"], d["app"], d["version"], d["kind"], d["path"]) for d in drift] == [
            ("till-1", "till", "1.0.0", "modified", "till.conf")
        ]
        assert [e["path"] for e in site.cli("runtime", "events", "--kind", "drift")] == ["till.conf"]
    finally:
        code, out = stop_agent(agent)
    assert code == 0, out


def test_a_version_deployed_through_an_edge_is_found_where_its_script_runs(
    site: Site, edge_server: EdgeProcess
) -> None:
    """The whole way: released, distributed to an edge, deployed to the group; the agent downloads
    it from the edge, verifies and installs it, its restart command starts the script."""
    run = site.tmp / "run"
    run.mkdir()
    site.release("1.0.0", {"restart.sh": RESTART.format(python=sys.executable).replace("$RUN", str(run)).encode()})
    status, public = http("GET", f"{site.service.url}/distribution/api/v1/keys/gpg/public")
    assert status == 200
    trust(edge_server, public)
    edge = {"name": "edge-1", "url": edge_server.url, "site_name": "lisbon", "city_name": "Lisbon"}
    site.call(
        "POST", "/distribution/api/v1/edges", edge | {"country_code": "PT", "token": edge_server.admin_token}, 201
    )
    rules = [{"site_name": "*", "city_name": "*", "country_codes": ["*"]}]
    job = site.call("POST", "/distribution/api/v1/distribution/till-app/1.0.0", {"distribution_rules": rules}, 202)
    progress = f"/distribution/api/v1/release_bundle/till-app/1.0.0/distribution/{job['id']}"
    done = wait_for(
        lambda: site.call("GET", progress)["status"] in ("Completed", "Failed") and site.call("GET", progress)
    )
    assert done["status"] == "Completed", done
    app = {"name": "till", "bundle": "till-app", "install_dir": str(site.install_dir), "restart": "sh restart.sh"}
    site.call("POST", "/fleet/api/v1/apps", app, 201)
    site.enroll()
    agent = start_agent("run", "--data-dir", str(site.data_dir))
    try:
        site.call(
            "POST",
            "/fleet/api/v1/deployments",
            {"app": "till", "version": "1.0.0", "targets": {"groups": ["pos"]}},
            201,
        )
        found = wait_for(lambda: site.where("1.0.0"), what="the deployed version to run")
        assert [(w["device"], w["script"], w["path"]) for w in found] == [
            ("till-1", "app.py", f"{SOURCE_REPO}/till-app/1.0.0/app.py")
        ]
        (site.install_dir / "versions" / "1.0.0" / "till.conf").write_bytes(b"edited\n")
        drift = wait_for(lambda: site.cli("runtime", "drift"), what="the edited file to show as drift")
        assert [(d["app"], d["version"], d["kind"], d["path"]) for d in drift] == [
            ("till", "1.0.0", "modified", "till.conf")
        ]
    finally:
        code, out = stop_agent(agent)
        pid_file = run / "app.pid"
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert code == 0, out


def test_a_new_version_moves_what_runtime_where_answers_once_the_old_process_exits(site: Site) -> None:
    site.release("1.0.0")
    site.release("2.0.0")
    site.enroll()
    site.install("1.0.0")
    agent = start_agent("run", "--data-dir", str(site.data_dir))
    try:
        wait_for(lambda: site.where("1.0.0"), what="1.0.0 to run")
        old = site.processes[-1]
        site.install("2.0.0")
        wait_for(lambda: site.where("2.0.0"), what="2.0.0 to run")
        assert site.where("1.0.0")  # the old process still runs
        old.kill()
        old.wait()
        wait_for(lambda: not site.where("1.0.0"), what="1.0.0 to be gone once its process exited")
        assert [w["path"] for w in site.where("2.0.0")] == [f"{SOURCE_REPO}/till-app/2.0.0/app.py"]
    finally:
        code, out = stop_agent(agent)
    assert code == 0, out


def test_a_group_with_the_sensor_off_reports_nothing(site: Site) -> None:
    site.release("1.0.0")
    site.enroll()
    site.cli("runtime", "configure", "pos", "--disabled")
    site.install("1.0.0")
    agent = start_agent("run", "--data-dir", str(site.data_dir))
    try:
        seen = {wait_for(site.checked_in, what="a first check-in")}
        wait_for(lambda: seen.add(site.checked_in()) or len(seen) >= 4, what="three more check-ins")
        assert site.cli("runtime", "device", "till-1")["processes"] == []
        assert site.where("1.0.0") == []
    finally:
        code, out = stop_agent(agent)
    assert code == 0, out
