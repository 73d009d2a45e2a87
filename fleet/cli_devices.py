"""``distribution fleet token|devices|device|app``: enrollment tokens, the fleet, apps, as REST calls."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import click

from distribution.progress import human_bytes
from repository.cli_support import emit, remote_options
from repository.client import call
from wire.errors import WireError
from wire.fleet import FLEET_API, MAX_PAGE, check_name

remote = remote_options("DISTRIBUTION", "http://127.0.0.1:8080")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")


def _checked_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A name as the service checks it, before it becomes part of a URL."""
    try:
        return value if value is None else check_name(value, param.name or "name")
    except WireError as exc:
        raise click.BadParameter(exc.message) from None


def _tags(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals:
            raise click.BadParameter(f"{value!r}: write it key=value")
        tags[key] = text
    return tags


name_argument = click.argument("name", callback=_checked_name)
tag_option = click.option("--tag", "tags", multiple=True, callback=_tags, help="key=value (repeatable).")


@click.group("token")
def token_group() -> None:
    """Enrollment tokens: what devices enroll with."""


@token_group.command("create")
@remote
@as_json
@click.option("--group", required=True, help="The group every device enrolled with it joins.")
@tag_option
@click.option("--expires", required=True, help="How long it may be used: seconds, or 90s, 30m, 24h, 7d.")
def token_create(url: str, token: str | None, as_json: bool, group: str, tags: dict[str, str], expires: str) -> None:
    """Create an enrollment token; its secret is printed now and never again."""
    expires_in: int | str = int(expires) if expires.isdigit() else expires
    answer = call(
        url, token, "POST", f"{FLEET_API}/enrollment-tokens", {"group": group, "tags": tags, "expires_in": expires_in}
    )
    emit(answer, as_json, lambda t: f"{t['token']}\n{_token_line(t)}")


def _token_line(t: dict[str, Any]) -> str:
    tags = " ".join(f"{k}={v}" for k, v in t["tags"].items())
    return (
        f"{t['id']}  {t['state']}  group {t['group']}  {tags}  expires {t['expires']}  {t['devices_enrolled']} devices"
    )


@token_group.command("list")
@remote
@as_json
def token_list(url: str, token: str | None, as_json: bool) -> None:
    """Enrollment tokens with their state (active, expired, revoked), never their secrets."""
    answer = call(url, token, "GET", f"{FLEET_API}/enrollment-tokens")
    emit(answer, as_json, lambda ts: "\n".join(map(_token_line, ts)) or "no enrollment tokens")


@token_group.command("revoke")
@remote
@click.argument("token_id")
def token_revoke(url: str, token: str | None, token_id: str) -> None:
    """Revoke token TOKEN_ID: no device enrolls with it any more (enrolled ones keep working)."""
    call(url, token, "DELETE", f"{FLEET_API}/enrollment-tokens/{quote(token_id, safe='')}")
    click.echo(f"revoked enrollment token {token_id}", err=True)


def _percent(part: int | None, whole: int | None) -> str:
    return "-" if part is None or not whole else f"{100 * part // whole}%"


def _device_row(d: dict[str, Any]) -> tuple[str, ...]:
    apps = ",".join(f"{name}={app['version']}" for name, app in d["apps"].items()) or "-"
    online = "revoked" if d["revoked"] else "online" if d["online"] else "offline"
    cpu = "-" if d["cpu_percent"] is None else f"{d['cpu_percent']}%"
    ram = (
        "-"
        if d["memory_total"] is None
        else f"{_percent(d['memory_used'], d['memory_total'])} of {human_bytes(d['memory_total'])}"
    )
    disk = "-" if d["disk_free"] is None else f"{human_bytes(d['disk_free'])} free"
    return d["name"], online, d["group"], apps, cpu, ram, disk, d["last_seen"] or "never"


def device_table(devices: list[dict[str, Any]]) -> str:
    """The fleet as a table: name, online, group, apps and versions, CPU, RAM, disk, last seen."""
    rows = [("NAME", "STATE", "GROUP", "APPS", "CPU", "RAM", "DISK", "LAST SEEN"), *map(_device_row, devices)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command("devices")
@remote
@as_json
@click.option("--group", help="Only devices of this group.")
@tag_option
@click.option("--online/--offline", default=None, help="Only devices online (or offline).")
@click.option("--app", help="Only devices running this app.")
@click.option("--version", help="Only devices running this version (of --app, if given).")
def devices(url: str, token: str | None, as_json: bool, group: str | None, tags: dict[str, str],
            online: bool | None, app: str | None, version: str | None) -> None:  # fmt: skip
    """The fleet: each device online or not, its apps and versions, CPU, RAM and disk."""
    query: list[tuple[str, str]] = [("tag", f"{k}={v}") for k, v in tags.items()]
    for key, value in (("group", group), ("app", app), ("version", version)):
        if value is not None:
            query.append((key, value))
    if online is not None:
        query.append(("online", "true" if online else "false"))
    found: list[dict[str, Any]] = []
    after: list[tuple[str, str]] = []
    while True:
        page = call(url, token, "GET", f"{FLEET_API}/devices?{urlencode([*query, ('limit', str(MAX_PAGE)), *after])}")
        found += page["devices"]
        if page["next"] is None:
            break
        after = [("after", page["next"])]
    emit(found, as_json, lambda ds: device_table(ds) if ds else "no devices")


@click.group()
def device() -> None:
    """One device: show it, revoke it, tune its poll interval."""


def _device_text(d: dict[str, Any]) -> str:
    lines = [device_table([d]), f"id {d['id']}, enrolled {d['enrolled']}, polls every {d['poll_interval']} s"]
    lines.append("tags: " + (" ".join(f"{k}={v}" for k, v in d["tags"].items()) or "none"))
    if d.get("action"):
        lines.append(f"action {d['action']['action_id']}: {d['action']['state']}")
    lines += [f"  {h['time']}  cpu {h['heartbeat']['cpu_percent']}%" for h in d.get("history", [])]
    return "\n".join(lines)


@device.command("show")
@remote
@as_json
@name_argument
def device_show(url: str, token: str | None, as_json: bool, name: str) -> None:
    """Device NAME with its recent heartbeats."""
    emit(call(url, token, "GET", f"{FLEET_API}/devices/{name}"), as_json, _device_text)


@device.command("revoke")
@remote
@name_argument
def device_revoke(url: str, token: str | None, name: str) -> None:
    """Revoke device NAME's credential: its next call is refused, and it stops."""
    call(url, token, "POST", f"{FLEET_API}/devices/{name}/revoke")
    click.echo(f"revoked device {name}", err=True)


@device.command("set")
@remote
@as_json
@click.option("--poll-interval", type=int, required=True, help="Seconds between the device's check-ins.")
@name_argument
def device_set(url: str, token: str | None, as_json: bool, poll_interval: int, name: str) -> None:
    """Tune device NAME: it hears the new interval at its next check-in."""
    answer = call(url, token, "PUT", f"{FLEET_API}/devices/{name}", {"poll_interval": poll_interval})
    emit(answer, as_json, _device_text)


@click.group()
def group() -> None:
    """Groups: their devices and poll intervals."""


@group.command("list")
@remote
@as_json
def group_list(url: str, token: str | None, as_json: bool) -> None:
    """Every group with its devices and its own poll interval (or the default)."""
    emit(
        call(url, token, "GET", f"{FLEET_API}/groups"),
        as_json,
        lambda gs: "\n".join(map(_group_line, gs)) or "no groups",
    )


def _group_line(g: dict[str, Any]) -> str:
    polls = "the default interval" if g["poll_interval"] is None else f"every {g['poll_interval']} s"
    return f"{g['group']}  {g['devices']} devices  polling {polls}"


@group.command("set")
@remote
@as_json
@click.option("--poll-interval", type=int, required=True, help="Seconds between check-ins of its devices.")
@name_argument
def group_set(url: str, token: str | None, as_json: bool, poll_interval: int, name: str) -> None:
    """Tune group NAME: its devices now and those enrolled into it later."""
    answer = call(url, token, "PUT", f"{FLEET_API}/groups/{name}", {"poll_interval": poll_interval})
    emit(answer, as_json, _group_line)


@click.group()
def app() -> None:
    """Apps: how each installs on devices."""


def _app_line(a: dict[str, Any]) -> str:
    health = a["health"] or {}
    check = health.get("url") or health.get("command") or "none"
    return f"{a['name']}  bundle {a['bundle']}  in {a['install_dir']}  keep {a['keep']}  health {check}"


@app.command("create")
@remote
@as_json
@click.option("--bundle", required=True, help="The release bundle whose versions this app installs.")
@click.option("--install-dir", required=True, help="Absolute directory on the device (versions/ and current).")
@click.option("--pre-install", help="Command run in the new version's directory before the switch.")
@click.option("--restart", help="Command that restarts the app after the switch.")
@click.option("--health", help="An http(s) URL that must answer 2xx, or a command that must exit 0.")
@click.option("--health-timeout", type=int, default=60, show_default=True, help="Seconds the health check may take.")
@click.option("--keep", type=int, default=3, show_default=True, help="Versions kept on the device.")
@name_argument
def app_create(url: str, token: str | None, as_json: bool, bundle: str, install_dir: str, pre_install: str | None,
               restart: str | None, health: str | None, health_timeout: int, keep: int, name: str) -> None:  # fmt: skip
    """Define app NAME (the same definition again is fine; another one is refused)."""
    body: dict[str, Any] = {"name": name, "bundle": bundle, "install_dir": install_dir, "keep": keep}
    body |= {k: v for k, v in (("pre_install", pre_install), ("restart", restart)) if v is not None}
    if health is not None:
        kind = "url" if health.startswith(("http://", "https://")) else "command"
        body["health"] = {kind: health, "timeout": health_timeout}
    emit(call(url, token, "POST", f"{FLEET_API}/apps", body), as_json, _app_line)


@app.command("list")
@remote
@as_json
def app_list(url: str, token: str | None, as_json: bool) -> None:
    """Every app and how it installs."""
    emit(call(url, token, "GET", f"{FLEET_API}/apps"), as_json, lambda a: "\n".join(map(_app_line, a)) or "no apps")


@app.command("delete")
@remote
@name_argument
def app_delete(url: str, token: str | None, name: str) -> None:
    """Forget app NAME (devices keep what they installed)."""
    call(url, token, "DELETE", f"{FLEET_API}/apps/{name}")
    click.echo(f"deleted app {name}", err=True)


COMMANDS: list[click.Command] = [token_group, devices, device, group, app]
