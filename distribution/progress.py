"""The CLI's view of a distribution: one line per edge, and ``--wait``'s live progress (files, bytes, rate)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from repository.client import call

from .job_states import DELETE

V1 = "/distribution/api/v1"
POLL_SECONDS = 1.0
DONE = ("Completed", "Failed")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def site_line(site: dict[str, Any], rate: float | None = None, *, removal: bool = False) -> str:
    """One edge's line; a removal from edges counts the files removed there."""
    name = site["target_artifactory"]["name"]
    line = f"  {name:<20} {site['status']:<12} {site['distributed_files']}/{site['total_files']} files"
    if removal:
        line += " removed"
    else:
        line += (
            f"  {human_bytes(site['distributed_bytes'])}/{human_bytes(site['total_bytes'])}"
            f"  sent {human_bytes(site.get('sent_bytes', 0))}"
        )
    if rate is not None and not removal and site["status"] not in DONE:
        line += f"  {human_bytes(rate)}/s"
    return line + (f"  {site['general_error']}" if site["general_error"] else "")


def is_removal(d: dict[str, Any]) -> bool:
    return d["type"] == DELETE


def status_text(d: dict[str, Any]) -> str:
    head = (
        f"{d['release_bundle_name']} {d['release_bundle_version']}  #{d['distribution_id']} {d['type']}"
        f"  {d['status']}  started {d['start_time']}"
    )
    return "\n".join([head, *(site_line(s, removal=is_removal(d)) for s in d["sites"])])


class Rates:
    """Bytes per second per edge, from the sent counters between two polls."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, site: dict[str, Any]) -> float | None:
        name, sent, now = site["target_artifactory"]["name"], site.get("sent_bytes", 0), time.monotonic()
        before = self._last.get(name)
        self._last[name] = (now, sent)
        if before is None or now <= before[0]:
            return None
        return max(0.0, (sent - before[1]) / (now - before[0]))


def follow(url: str, token: str | None, name: str, version: str, dist_id: int) -> dict[str, Any]:
    """Poll one distribution until it ends, redrawing a line per edge on a terminal (stderr)."""
    rates, drawn, last = Rates(), 0, ""
    tty = sys.stderr.isatty()
    while True:
        status = call(url, token, "GET", f"{V1}/release_bundle/{name}/{version}/distribution/{dist_id}")
        lines = [
            f"{status['status']}",
            *(site_line(s, rates.rate(s), removal=is_removal(status)) for s in status["sites"]),
        ]
        text = "\n".join(lines)
        if tty:
            click.echo(("\x1b[F\x1b[K" * drawn) + text, err=True)
            drawn = len(lines)
        elif text != last:
            click.echo(text, err=True)
        last = text
        if status["status"] in DONE:
            return status  # type: ignore[no-any-return]
        time.sleep(POLL_SECONDS)
