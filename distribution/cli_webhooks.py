"""``distribution webhook add|list|remove|enable|disable|deliveries|redeliver``: REST calls, like every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from repository.cli_support import emit, remote_options
from repository.client import call

V1 = "/distribution/api/v1"
remote = remote_options("DISTRIBUTION", "http://127.0.0.1:8080")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
webhook_id = click.argument("webhook_id", type=click.IntRange(min=1))


@click.group()
def webhook() -> None:
    """Webhook subscriptions: add, list, remove, enable, disable; their deliveries, and redelivery."""


def _line(s: dict[str, Any]) -> str:
    state = "enabled" if s["enabled"] else f"disabled ({s['disabled_reason']})"
    return f"{s['id']}  {s['url']}  {','.join(s['events'])}  {state}"


@webhook.command("add")
@remote
@as_json
@click.option("--event", "events", multiple=True, required=True,
              help="An event to send, e.g. distribution.completed, or '*' for all (repeatable).")  # fmt: skip
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file holding the signing secret (its first line); without it one is generated.")  # fmt: skip
@click.argument("target_url")
def webhook_add(
    url: str, token: str | None, as_json: bool, events: tuple[str, ...], secret_file: Path | None, target_url: str
) -> None:
    """Send the events to TARGET_URL. The signing secret is printed once, now: keep it."""
    body: dict[str, Any] = {"url": target_url, "events": list(events)}
    if secret_file is not None:
        lines = secret_file.read_text().splitlines()
        body["secret"] = lines[0] if lines else ""
    answer = call(url, token, "POST", f"{V1}/webhooks", body)
    shown = "(from --secret-file)" if not answer["secret_generated"] else answer["secret"]
    emit(answer, as_json, lambda s: f"{_line(s)}\nsecret: {shown}")


@webhook.command("list")
@remote
@as_json
def webhook_list(url: str, token: str | None, as_json: bool) -> None:
    """List the subscriptions (never their secrets)."""
    emit(call(url, token, "GET", f"{V1}/webhooks"), as_json, lambda subs: "\n".join(map(_line, subs)) or "no webhooks")


@webhook.command("remove")
@remote
@webhook_id
def webhook_remove(url: str, token: str | None, webhook_id: int) -> None:
    """Remove subscription WEBHOOK_ID and its delivery log."""
    call(url, token, "DELETE", f"{V1}/webhooks/{webhook_id}")
    click.echo(f"removed webhook {webhook_id}", err=True)


def _switch(enabled: bool) -> Any:
    @remote
    @as_json
    @webhook_id
    def command(url: str, token: str | None, as_json: bool, webhook_id: int) -> None:
        emit(call(url, token, "PATCH", f"{V1}/webhooks/{webhook_id}", {"enabled": enabled}), as_json, _line)

    command.__doc__ = (
        "Send subscription WEBHOOK_ID's deliveries again, from where they stopped."
        if enabled
        else "Hold subscription WEBHOOK_ID's deliveries (they queue meanwhile)."
    )
    return command


webhook.command("enable")(_switch(True))
webhook.command("disable")(_switch(False))


def _delivery_line(d: dict[str, Any]) -> str:
    last = f"  last {d['last_status']}" if d["last_status"] is not None else ""
    error = f"  {d['last_error']}" if d["last_error"] else ""
    return f"{d['id']}  {d['created']}  {d['event_type']}  {d['status']}  attempts {d['attempts']}{last}{error}"


@webhook.command("deliveries")
@remote
@as_json
@click.option("--start", default=0, type=click.IntRange(min=0), help="Skip this many (newest first).")
@webhook_id
def webhook_deliveries(url: str, token: str | None, as_json: bool, start: int, webhook_id: int) -> None:
    """The delivery log of WEBHOOK_ID, newest first: status, attempts, last HTTP status and error."""
    answer = call(url, token, "GET", f"{V1}/webhooks/{webhook_id}/deliveries", start_pos=str(start))
    emit(answer, as_json, lambda ds: "\n".join(map(_delivery_line, ds)) or "no deliveries")


@webhook.command("redeliver")
@remote
@as_json
@click.argument("delivery_id", type=click.IntRange(min=1))
def webhook_redeliver(url: str, token: str | None, as_json: bool, delivery_id: int) -> None:
    """Send DELIVERY_ID's event again (queued after what its subscription has waiting)."""
    emit(call(url, token, "POST", f"{V1}/webhooks/deliveries/{delivery_id}/redeliver"), as_json, _delivery_line)
