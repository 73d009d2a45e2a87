"""``distribution runtime ...``: what runs where, as REST calls to /fleet/api/v1/runtime."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from repository.cli_support import emit
from repository.client import call
from wire.runtime import EVENT_KINDS, MAX_INTERVAL, MIN_INTERVAL, RUNTIME_API

from .cli_devices import _checked_name, as_json, remote

group_option = click.option("--group", callback=_checked_name, help="Only devices of this group.")


def _params(**values: Any) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}


def _where_line(p: dict[str, Any]) -> str:
    return f"{p['device']}  pid {p['pid']}  {p['script'] or p['exe']}  ({p['path']})"


def _process_line(p: dict[str, Any]) -> str:
    found = p["provenance"]
    origin = "unknown" if not found else ", ".join(f"{f['bundle']} {f['version']} {f['path']}" for f in found[:3])
    return f"{p['pid']:>7}  {p['user'] or '-':<10} {p['script'] or p['exe']}  {origin}"


def _device_text(d: dict[str, Any]) -> str:
    lines = [f"{d['device']} ({d['group']}): {len(d['processes'])} processes, reported {d['updated'] or 'never'}"]
    lines += [_process_line(p) for p in d["processes"]]
    lines += [f"drift: {r['app']} {r['version']} {r['kind']} {r['path']}" for r in d["drift"]]
    return "\n".join(lines)


@click.group("runtime")
def runtime() -> None:
    """What devices run, traced back to the bundle versions that shipped it."""


@runtime.command("where")
@remote
@as_json
@click.argument("bundle")
@click.argument("version")
@click.option("--after", callback=_checked_name, help="Only devices whose name sorts after this one (the next page).")
@click.option("--limit", type=click.IntRange(1, 1000), default=1000, show_default=True, help="Devices in the page.")
def where(url: str, token: str | None, as_json: bool, bundle: str, version: str, after: str | None, limit: int) -> None:
    """Devices where a process of BUNDLE VERSION runs now."""
    path = f"{RUNTIME_API}/where/{quote(bundle, safe='')}/{quote(version, safe='')}"
    found = call(url, token, "GET", path, **_params(after=after, limit=limit))
    emit(found, as_json, lambda rows: "\n".join(map(_where_line, rows)) or f"{bundle} {version} runs nowhere")


@runtime.command("device")
@remote
@as_json
@click.argument("name", callback=_checked_name)
def device(url: str, token: str | None, as_json: bool, name: str) -> None:
    """The processes NAME runs, each with bundle, version and path, or unknown; and its drift."""
    emit(call(url, token, "GET", f"{RUNTIME_API}/devices/{name}"), as_json, _device_text)


@runtime.command("unknown")
@remote
@as_json
@group_option
def unknown(url: str, token: str | None, as_json: bool, group: str | None) -> None:
    """Executables running that no stored bundle version ships, with the devices that run them."""
    found = call(url, token, "GET", f"{RUNTIME_API}/unknown", **_params(group=group))
    emit(
        found,
        as_json,
        lambda rows: (
            "\n".join(f"{r['sha256'][:12]}  {r['path']}  on {', '.join(r['devices'])}" for r in rows)
            or "nothing unknown runs"
        ),
    )


@runtime.command("drift")
@remote
@as_json
@group_option
def drift(url: str, token: str | None, as_json: bool, group: str | None) -> None:
    """Installed files whose bytes no longer match their signed manifest."""
    found = call(url, token, "GET", f"{RUNTIME_API}/drift", **_params(group=group))
    emit(
        found,
        as_json,
        lambda rows: (
            "\n".join(f"{r['device']}  {r['app']} {r['version']}  {r['kind']}  {r['path']}" for r in rows) or "no drift"
        ),
    )


@runtime.command("events")
@remote
@as_json
@click.option("--kind", type=click.Choice(EVENT_KINDS))
@click.option("--device", "device_name", callback=_checked_name, help="Only this device's events.")
@click.option("--after", type=click.IntRange(0), help="Only events after this id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def events(
    url: str, token: str | None, as_json: bool, kind: str | None, device_name: str | None, after: int | None, limit: int
) -> None:
    """Unknown executables that started and drift found, oldest first."""
    found = call(
        url, token, "GET", f"{RUNTIME_API}/events", **_params(kind=kind, device=device_name, after=after, limit=limit)
    )
    emit(
        found,
        as_json,
        lambda rows: (
            "\n".join(f"{r['id']:>6} {r['time']} {r['device']} {r['kind']} {r['path']}" for r in rows) or "no events"
        ),
    )


@runtime.command("configure")
@remote
@as_json
@click.argument("group", callback=_checked_name)
@click.option("--enabled/--disabled", default=True, show_default=True, help="Whether the group's devices report.")
@click.option(
    "--interval",
    type=click.IntRange(MIN_INTERVAL, MAX_INTERVAL),
    default=60,
    show_default=True,
    help="Seconds between scans.",
)
@click.option("--exclude", multiple=True, help="A glob over executable paths not to report (repeatable).")
@click.option("--drop-cmdline", is_flag=True, help="Report no command lines.")
def configure(
    url: str,
    token: str | None,
    as_json: bool,
    group: str,
    enabled: bool,
    interval: int,
    exclude: tuple[str, ...],
    drop_cmdline: bool,
) -> None:
    """Set GROUP's runtime sensor settings (each setting left out takes its default)."""
    body = {"enabled": enabled, "interval": interval, "exclude": list(exclude), "drop_cmdline": drop_cmdline}
    answer = call(url, token, "PUT", f"{RUNTIME_API}/groups/{group}", body)
    emit(answer, as_json, lambda a: f"{group}: runtime {'on' if a['enabled'] else 'off'}, every {a['interval']} s")
