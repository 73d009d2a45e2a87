"""``make run``: the Distribution service and two edges, trusted and wired, with a signed demo bundle,
and two enrolled devices (``node-agent`` processes) with the fleet's demo app ready to deploy.

    python -m devstack.run [--run-dir .run] [--distribution-port 8080] [--edge-port 8082 --edge-port 8083]

Prints the URLs, the tokens and commands to try, then runs until Ctrl-C or SIGTERM, which
stop the agents, the demo apps they started and every service gracefully (exit 0). A service that dies meanwhile is
started again, on its port and data dir, and the console says so. Port 0 picks free ports.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from .fleet_app import APP
from .processes import Interrupted, StartFailed, find_program
from .rest import CallFailed
from .topology import DISTRIBUTION_PORT, EDGE_PORTS, TOKENS_FILE, LocalTopology, Ready

PORT = click.IntRange(0, 65535)
OTHER_PORTS = "make run DISTRIBUTION_PORT=18080 EDGE_PORT=18082 EDGE2_PORT=18083 (0: any free port)"


def say(line: str) -> None:
    click.echo(f"  {line}")


def shown_path(path: str) -> str:
    """A path as a user would type it here: relative when it is under the current directory."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if not relative.startswith("..") else path


def banner(ready: Ready) -> str:
    dist = shown_path(find_program("distribution"))
    bundle = ready.bundle
    edge = ready.edges[-1]
    some_file = next(p for p in bundle.files if p.endswith(".tar.gz"))
    lines = [
        "",
        f"  Distribution service  {ready.distribution_url}",
        f"    admin token         {ready.distribution_token}",
        f"    web console         {ready.distribution_url}/ui/   (log in with the admin token)",
    ]
    for e in ready.edges:
        lines += [
            f"  Edge {e.name:<16} {e.url}/artifactory/   ({e.site}, {e.city}, {e.country})",
            f"    admin token         {e.admin_token}",
            f"    web console         {e.url}/ui/",
        ]
    lines += [
        f"  Tokens are kept in {shown_path(str(ready.run_dir / TOKENS_FILE))}; logs in "
        f"{shown_path(str(ready.run_dir / 'logs'))}/.",
        "",
        f"  Bundle {bundle.name} {bundle.version} is {bundle.state.lower()} and ready to distribute "
        f"({len(bundle.files)} files, {bundle.size} bytes in {bundle.repo}).",
        "",
        "  Try:",
        f"    export DISTRIBUTION_URL={ready.distribution_url} DISTRIBUTION_TOKEN={ready.distribution_token}",
        f"    {shlex.quote(dist)} distribute {bundle.name} {bundle.version} --wait",
        f"    {shlex.quote(dist)} status {bundle.name} {bundle.version}",
        f"    curl -O {edge.url}/artifactory/{bundle.repo}/{some_file}",
        "",
        *fleet_lines(ready, shlex.quote(dist)),
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def fleet_lines(ready: Ready, dist: str) -> list[str]:
    """The devices, and the fleet commands to try with them."""
    fleet = ready.fleet
    names = ", ".join(a.name for a in fleet.agents)
    good = [v for v, broken in fleet.releases.items() if not broken]
    broken = [v for v, broken in fleet.releases.items() if broken]
    return [
        f"  Devices {names} (node-agent, group {fleet.group}) run from "
        f"{shown_path(str(ready.run_dir / 'agents'))}/; app {APP} {', '.join(good)} and {', '.join(broken)} "
        "(broken: its health check fails) are on every edge.",
        "  Then try the fleet:",
        f"    {dist} fleet devices",
        f"    {dist} fleet deploy {APP} {good[0]} --group {fleet.group} --canary 1",
        f"    {dist} fleet status <id> --watch          # the id deploy printed; `fleet deployments` lists them",
        f"    {dist} fleet deploy {APP} {broken[0]} --group {fleet.group} --canary 1   # halts, the canary rolls back",
        f"    {dist} fleet rollback <id>",
    ]


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".run"), show_default=True,
              help="Data, logs and tokens of every service; kept between runs.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every service listens on.")
@click.option("--distribution-port", type=PORT, default=DISTRIBUTION_PORT, show_default=True, help="0: any free port.")
@click.option("--edge-port", "edge_ports", type=PORT, multiple=True, default=EDGE_PORTS, show_default=True,
              help="One per edge (repeat); 0: any free port.")  # fmt: skip
def main(run_dir: Path, host: str, distribution_port: int, edge_ports: tuple[int, ...]) -> None:
    """Start the Distribution service and edges, trusted and wired, with a signed demo bundle, and two devices."""
    topology = LocalTopology(run_dir, host=host, distribution_port=distribution_port, edge_ports=edge_ports)
    code = 0
    with topology.supervisor.signals():
        try:
            click.echo(f"Starting the distribution service and {len(edge_ports)} edges in {shown_path(str(run_dir))}/")
            ready = topology.start(say)
            click.echo(banner(ready))
            topology.supervisor.keep_running(say)
        except Interrupted as exc:
            click.echo(f"\n{exc.signal_name}: stopping every service")
        except (StartFailed, CallFailed) as exc:
            click.echo(f"error: {exc}", err=True)
            if "address already in use" in str(exc):
                click.echo(f"A port is taken (is another `make run` running?): {OTHER_PORTS}", err=True)
            code = 1
        finally:
            codes = topology.stop()
    failed = {name: c for name, c in codes.items() if c not in (0, None)}
    if failed:
        click.echo("stopped, not cleanly: " + ", ".join(f"{n} exited {c}" for n, c in failed.items()), err=True)
        code = code or 1
    else:
        click.echo("Every service stopped.")
    sys.exit(code)


if __name__ == "__main__":
    main()
