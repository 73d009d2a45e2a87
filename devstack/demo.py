"""``make demo``: the whole story end to end, without a question, in a fresh temporary directory.

    python -m devstack.demo [--run-dir DIR] [--keep]

Starts the topology of ``make run`` on free ports, then distributes the signed demo bundle
to both edges with the CLI (``--wait``), downloads every file from each edge and compares
its sha256 with the source, checks the status over REST and with the CLI, undistributes,
and checks the files are gone. Prints each step with ✓ or ✗; exits 0 only when every step
worked, and stops every service in any case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from . import rest
from .processes import Interrupted, StartFailed, find_program, service_environment
from .rest import CallFailed, expect
from .topology import LocalTopology, Ready

V1 = "/distribution/api/v1"
CLI_TIMEOUT = 180.0
REMOVAL_TIMEOUT = 90.0  # a hang guard: removal from two local edges takes about a second


class StepFailed(Exception):
    pass


def check(condition: bool, problem: str) -> None:
    if not condition:
        raise StepFailed(problem)


class Story:
    """The steps, run against a started topology; each returns a short detail for its ✓ line."""

    def __init__(self, ready: Ready) -> None:
        self.ready = ready
        self.bundle = ready.bundle
        self.program = find_program("distribution")
        self.env = service_environment(
            {"DISTRIBUTION_URL": ready.distribution_url, "DISTRIBUTION_TOKEN": ready.distribution_token}
        )
        self.source: dict[str, str] = {}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.program, *args], env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise StepFailed(f"`distribution {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        b, names = self.bundle, " and ".join(e.name for e in self.ready.edges)
        return [
            (f"distribute {b.name} {b.version} to {names} with `distribution distribute --wait`", self.distribute),
            (f"download every file from {names}, sha256 equal to the source", self.downloads),
            ("status over REST is Completed on every edge", self.rest_status),
            (f"`distribution status {b.name} {b.version}` shows Completed per edge", self.cli_status),
            (f"undistribute {b.name} {b.version} with `distribution undistribute`", self.undistribute),
            (f"the files and the bundle are gone from {names}", self.gone),
        ]

    def distribute(self) -> str:
        b = self.bundle
        final = json.loads(self.cli("distribute", b.name, b.version, "--wait", "--json").stdout)
        check(final["status"] == "Completed", f"distribution ended {final['status']}: {final}")
        sites = {s["target_artifactory"]["name"]: s["status"] for s in final["sites"]}
        check(sites == {e.name: "Completed" for e in self.ready.edges}, f"sites: {sites}")
        return f"distribution #{final['distribution_id']} Completed, {len(b.files)} files on {len(sites)} edges"

    def _source_sha256(self, path: str) -> str:
        if path not in self.source:
            url = f"{self.ready.distribution_url}/artifactory/{self.bundle.repo}/{quote(path)}"
            data = expect((200,), "GET", url, self.ready.distribution_token)
            self.source[path] = hashlib.sha256(data).hexdigest()
        return self.source[path]

    def downloads(self) -> str:
        count = 0
        for edge in self.ready.edges:
            for path in self.bundle.files:
                status, data = rest.request("GET", f"{edge.url}/artifactory/{self.bundle.repo}/{quote(path)}")
                check(status == 200, f"GET {path} from {edge.name}: {status}")
                got = hashlib.sha256(data).hexdigest()
                check(got == self._source_sha256(path), f"{path} on {edge.name}: sha256 {got} differs from source")
                count += 1
        return f"{count} downloads, every sha256 equal"

    def _latest(self) -> dict[str, Any]:
        b = self.bundle
        history = expect(
            (200,),
            "GET",
            f"{self.ready.distribution_url}{V1}/release_bundle/{b.name}/{b.version}/distribution",
            self.ready.distribution_token,
        )
        check(isinstance(history, list) and bool(history), f"no distribution recorded: {history}")
        return history[0]  # type: ignore[no-any-return]

    def rest_status(self) -> str:
        latest = self._latest()
        sites = {s["target_artifactory"]["name"]: s["status"] for s in latest["sites"]}
        check(latest["status"] == "Completed", f"status {latest['status']}")
        check(set(sites.values()) == {"Completed"}, f"sites: {sites}")
        return ", ".join(f"{n} {s}" for n, s in sorted(sites.items()))

    def cli_status(self) -> str:
        out = self.cli("status", self.bundle.name, self.bundle.version).stdout
        lines = [line for line in out.splitlines() if any(e.name in line.split() for e in self.ready.edges)]
        check(len(lines) == len(self.ready.edges), f"one line per edge expected:\n{out}")
        check(all("Completed" in line for line in lines), f"not Completed everywhere:\n{out}")
        return f"{len(lines)} edges Completed"

    def undistribute(self) -> str:
        b = self.bundle
        answer = json.loads(self.cli("undistribute", b.name, b.version, "--json").stdout)
        url = f"{self.ready.distribution_url}{V1}/release_bundle/{b.name}/{b.version}/distribution/{answer['id']}"
        deadline = time.monotonic() + REMOVAL_TIMEOUT
        while True:
            status = expect((200,), "GET", url, self.ready.distribution_token)
            if status["status"] in ("Completed", "Failed"):
                break
            check(time.monotonic() < deadline, f"removal still {status['status']} after {REMOVAL_TIMEOUT:.0f} s")
            time.sleep(0.2)
        check(status["status"] == "Completed", f"removal ended {status['status']}: {status}")
        return f"removal #{answer['id']} Completed"

    def gone(self) -> str:
        for edge in self.ready.edges:
            for path in self.bundle.files:
                status, _ = rest.request("GET", f"{edge.url}/artifactory/{self.bundle.repo}/{quote(path)}")
                check(status == 404, f"GET {path} from {edge.name}: {status}, not 404")
            held = expect((200,), "GET", f"{edge.url}/artifactory/api/distribution/bundles", edge.admin_token)
            demo = [b for b in held if b["name"] == self.bundle.name]  # the fleet's demo app stays
            check(not demo, f"{edge.name} still holds {demo}")
        return f"404 for every file, no {self.bundle.name} bundle left"


def run_story(ready: Ready) -> bool:
    story = Story(ready)
    for number, (title, step) in enumerate(story.steps(), start=2):
        try:
            detail = step()
        except (StepFailed, CallFailed, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            click.echo(f"✗ {number}. {title}\n    {exc}")
            return False
        click.echo(f"✓ {number}. {title} — {detail}")
    return True


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the services keep their data [a new temporary directory, removed on success].")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the run directory even when every step worked.")
def main(run_dir: Path | None, keep: bool) -> None:
    """Run the demo end to end; exit 0 only when every step worked."""
    temporary = run_dir is None
    root = Path(tempfile.mkdtemp(prefix="edge-demo-")) if run_dir is None else run_dir
    topology = LocalTopology(root, distribution_port=0, edge_ports=(0, 0))
    passed = False
    with topology.supervisor.signals():
        try:
            title = "start the distribution service and 2 edges, trust them, sign the demo bundle"
            try:
                ready = topology.start(lambda line: click.echo(f"    {line}"))
            except (StartFailed, CallFailed) as exc:
                click.echo(f"✗ 1. {title}\n    {exc}")
            else:
                click.echo(f"✓ 1. {title}")
                passed = run_story(ready)
        except Interrupted as exc:
            click.echo(f"✗ interrupted ({exc.signal_name})")
        finally:
            codes = topology.stop()
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    if unclean:
        click.echo("✗ stop every service cleanly: " + ", ".join(f"{n} exited {c}" for n, c in unclean.items()))
        passed = False
    if passed:
        click.echo("All steps passed.")
    else:
        click.echo(f"Demo failed; logs in {root / 'logs'}")
    if temporary and passed and not keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
