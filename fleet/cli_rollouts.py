"""``distribution fleet deploy|status|deployments|pause|resume|cancel|rollback`` and ``fleet url-key
propagate``: calls to the service's /fleet/api/v1, as any client would make them."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from repository.cli_support import emit, remote_options
from repository.client import call

DEPLOYMENTS = "/fleet/api/v1/deployments"
remote = remote_options("DISTRIBUTION", "http://127.0.0.1:8080")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
deployment_id = click.argument("deployment", type=click.IntRange(min=1))
WINDOW_RE = re.compile(r"([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})")
SETTLED = ("completed", "canceled", "rolled_back", "halted")


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = text
    return tags


def _amount(value: str | None) -> str | int | None:
    """``5%`` stays a percentage; a plain number is a count of devices."""
    return int(value) if value is not None and value.isdigit() else value


@click.command("deploy")
@remote
@as_json
@click.argument("app")
@click.argument("version")
@click.option("--group", "groups", multiple=True, help="Target the devices of this group (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only devices with this tag, KEY=VALUE (repeatable).")
@click.option("--device", "devices", multiple=True, help="Target this device by name too (repeatable).")
@click.option("--canary", help="The first phase: a percentage (5%) or a count of devices; then the rest.")
@click.option("--phase", "phases", multiple=True, help="Explicit phase sizes in order (repeatable); then the rest.")
@click.option("--halt-on-failures", help="Halt when a phase's failures pass this (10% or a count) [0].")
@click.option("--success-threshold", help="A phase's successes that start the next (95% or a count) [95%].")
@click.option("--window", help="Install only between these local times, HH:MM-HH:MM (may span midnight).")
@click.option("--timezone", default="UTC", show_default=True, help="The window's IANA time zone.")
@click.option("--allow-downgrade", is_flag=True, help="Install even on devices running a newer version.")
def deploy(url: str, token: str | None, as_json: bool, app: str, version: str, groups: tuple[str, ...],
           tags: tuple[str, ...], devices: tuple[str, ...], canary: str | None, phases: tuple[str, ...],
           halt_on_failures: str | None, success_threshold: str | None, window: str | None, timezone: str,
           allow_downgrade: bool) -> None:  # fmt: skip
    """Deploy VERSION of APP (its release bundle, signed) to devices, phase by phase."""
    body: dict[str, Any] = {
        "app": app,
        "version": version,
        "targets": {"groups": list(groups), "tags": _tags(tags), "devices": list(devices)},
        "allow_downgrade": allow_downgrade,
    }
    if canary is not None:
        body["canary"] = _amount(canary)
    if phases:
        body["phases"] = [_amount(p) for p in phases]
    for key, value in (("halt_on_failures", halt_on_failures), ("success_threshold", success_threshold)):
        if value is not None:
            body[key] = _amount(value)
    if window is not None:
        match = WINDOW_RE.fullmatch(window)
        if match is None:
            raise click.BadParameter(f"{window!r} is not HH:MM-HH:MM", param_hint="--window")
        body["window"] = {"start": match[1], "end": match[2], "timezone": timezone}
    emit(call(url, token, "POST", DEPLOYMENTS, body), as_json, _summary)


def _summary(d: dict[str, Any]) -> str:
    """One line per deployment; a listing's entries carry no phases, and then say none."""
    phases = d.get("phases") or []
    sizes = ", ".join(str(p["size"]) for p in phases)
    where = f" of {len(phases)} (sizes {sizes})" if phases else ""
    return (
        f"deployment {d['id']}: {d['app']} {d['version']} to {d['total']} devices, {d['state']},"
        f" phase {d['current_phase']}{where}" + (f"; {d['message']}" if d.get("message") else "")
    )


def _status_text(d: dict[str, Any], devices: list[dict[str, Any]]) -> str:
    lines = [_summary(d)]
    for p in d["phases"]:
        states = ", ".join(f"{n} {s}" for s, n in sorted(p["states"].items()))
        started = "started" if p["phase"] <= d["current_phase"] else "waiting"
        lines.append(f"  phase {p['phase']}: {p['size']} devices, {started}: {states}")
    for x in devices:
        step = f" at {x['step']}" if x.get("step") else ""
        back = f"; rolled back to {x['previous'] or 'nothing'}" if x.get("rolled_back") else ""
        back += f"; rollback to {x['rollback']['version']}: {x['rollback']['state']}" if x.get("rollback") else ""
        message = f" ({x['message'].splitlines()[-1][:80]})" if x.get("message") else ""
        lines.append(f"  {x['name']}  phase {x['phase']}  {x['state']}{step}{message}{back}")
    return "\n".join(lines)


def _with_devices(url: str, token: str | None, dep: int, limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The deployment and up to ``limit`` of its devices, read a page at a time."""
    answer = call(url, token, "GET", f"{DEPLOYMENTS}/{dep}")
    devices = list(answer["devices"])
    while answer["next"] is not None and len(devices) < limit:
        page = call(url, token, "GET", f"{DEPLOYMENTS}/{dep}", after=str(answer["next"]))
        devices.extend(page["devices"])
        answer["next"] = page["next"]
    return answer, devices[:limit]


@click.command("status")
@remote
@as_json
@deployment_id
@click.option("--watch", is_flag=True, help="Show it again every --interval seconds until it settles.")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=5.0, show_default=True)
@click.option("--devices", "limit", type=click.IntRange(0), default=100, show_default=True,
              help="Devices to list (0: phases only).")  # fmt: skip
def status(url: str, token: str | None, as_json: bool, deployment: int, watch: bool, interval: float,
           limit: int) -> None:  # fmt: skip
    """A deployment: its state, each phase's devices by state, and each device's state and step."""
    while True:
        answer, devices = _with_devices(url, token, deployment, limit)
        emit(answer | {"devices": devices}, as_json, lambda d: _status_text(d, d["devices"]))
        if not watch or answer["state"] in SETTLED:
            return
        time.sleep(interval)


@click.command("deployments")
@remote
@as_json
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def deployments(url: str, token: str | None, as_json: bool, limit: int) -> None:
    """The latest deployments, newest first."""
    answer = call(url, token, "GET", DEPLOYMENTS, limit=str(limit))
    emit(answer, as_json, lambda a: "\n".join(map(_summary, a["deployments"])) or "no deployments")


def _operation(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @remote
    @as_json
    @deployment_id
    def command(url: str, token: str | None, as_json: bool, deployment: int) -> None:
        emit(call(url, token, "POST", f"{DEPLOYMENTS}/{deployment}/{name}"), as_json, _summary)

    return command


@click.group("url-key")
def url_key() -> None:
    """The fleet's URL-signing key, which edges must trust to serve devices."""


@url_key.command("propagate")
@remote
@as_json
def propagate(url: str, token: str | None, as_json: bool) -> None:
    """Trust the key on every registered edge (registered with an admin token)."""
    answer = call(url, token, "POST", "/fleet/api/v1/url-key/propagate")

    def text(a: dict[str, Any]) -> str:
        lines = [f"{a['status']}: key {a['kid']}"]
        lines += [
            f"  {d['name']}: {d['status']}" + (f" ({d['message']})" if "message" in d else "") for d in a["details"]
        ]
        return "\n".join(lines)

    emit(answer, as_json, text)
    if answer["status"] != "SUCCESS":
        raise SystemExit(1)


COMMANDS: list[click.Command] = [
    deploy,
    status,
    deployments,
    _operation("pause", "Pause: devices not started wait; those under way go on."),
    _operation("resume", "Resume a paused deployment."),
    _operation("cancel", "Cancel: devices not started never start; those under way are told to stop."),
    _operation("rollback", "Roll back: every device that installed it goes back to what it ran before."),
    url_key,
]
