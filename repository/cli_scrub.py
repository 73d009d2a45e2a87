"""``edge scrub`` and ``distribution scrub``: start a pass, follow it, see what is quarantined (REST calls)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from .cli_support import emit
from .client import call

SCRUB = "/artifactory/api/scrub"
POLL_SECONDS = 1.0


def status_text(answer: dict[str, Any]) -> str:
    state = "running" if answer["running"] else "idle"
    background = "background passes every" if answer["enabled"] else "background passes off; interval"
    lines = [f"scrub {state}: {answer['rate']} bytes/s, {background} {answer['interval']} s"]
    if answer["pass"]:
        p = answer["pass"]
        lines.append(f"pass under way since {p['started']}: {p['blobs']} blobs, {p['bytes']} bytes, at {p['cursor']}")
    if answer["last_pass"]:
        p = answer["last_pass"]
        lines.append(
            f"last pass {p['started']} to {p['finished']}: {p['blobs']} blobs, {p['bytes']} bytes,"
            f" {p['quarantined']} quarantined"
        )
    for blob in answer["quarantined"]:
        kept = f", its bytes at {blob['location']}" if blob["location"] else ""
        lines.append(f"quarantined {blob['sha256']} since {blob['found']}: {blob['reason']}{kept}")
        lines += [f"  {path}" for path in blob["paths"]]
    return "\n".join(lines)


def scrub_group(remote: Callable[[Any], Any]) -> click.Group:
    """The ``scrub`` commands of a CLI whose ``remote`` options find its service."""

    @click.group("scrub")
    def scrub() -> None:
        """Read stored blobs back to find damaged bytes; list what is quarantined."""

    @scrub.command("run")
    @remote
    @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
    @click.option("--wait", is_flag=True, help="Follow the pass to its end; exit 1 if a blob is quarantined.")
    def run(url: str, token: str | None, as_json: bool, wait: bool) -> None:
        """Start a pass now, at the configured rate (an admin token)."""
        answer = call(url, token, "POST", SCRUB)
        while wait and answer["running"]:
            time.sleep(POLL_SECONDS)
            answer = call(url, token, "GET", SCRUB)
        emit(answer, as_json, status_text)
        if wait and answer["quarantined"]:
            raise click.ClickException(f"{len(answer['quarantined'])} blob(s) quarantined")

    @scrub.command("status")
    @remote
    @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
    def status(url: str, token: str | None, as_json: bool) -> None:
        """The pass under way, the last one, and every quarantined blob with its paths."""
        emit(call(url, token, "GET", SCRUB), as_json, status_text)

    return scrub
