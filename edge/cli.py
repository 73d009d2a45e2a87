"""The ``edge`` command: ``serve`` runs a node; every other command calls a node's REST API."""

from __future__ import annotations

import json
import re
import sys
from typing import TextIO
from urllib.parse import quote, urlencode

import click

from repository import cli_support
from repository.cli_scrub import scrub_group
from repository.cli_support import serve_command
from repository.client import call
from repository.tokens import Role
from wire import protocol

from . import __version__
from .app import create_app
from .settings import load_edge_settings
from .workers import supervise


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Edge node of the artifact distribution system."""


main.add_command(
    serve_command(
        "edge node",
        default_data_dir="edge-data",
        default_port=8082,
        load=load_edge_settings,
        create_app=create_app,
        supervise=supervise,
    )
)
remote_options = cli_support.remote_options("EDGE", "http://127.0.0.1:8082")
main.add_command(scrub_group(remote_options))


@main.group()
def token() -> None:
    """Issue, list and revoke API tokens."""


@token.command("create")
@remote_options
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    help="The token's role [a user's own role; otherwise reader]. A user's token acts with the user's role.",
)
@click.option("--subject", help="Who the token is for: a user, or a name such as a service (defaults to the role).")
@click.option("--description", default="")
@click.option("--expires-in", type=click.IntRange(min=0), default=0, help="Lifetime in seconds (0: never).")
def token_create(
    url: str, token: str | None, role: str | None, subject: str | None, description: str, expires_in: int
) -> None:
    """Issue a token; prints its secret once."""
    body: dict[str, object] = {
        "username": subject or role or "reader",
        "description": description,
        "expires_in": expires_in,
    }
    if role is not None:
        body["role"] = role
    answer = call(url, token, "POST", "/access/api/v1/tokens", body)
    click.echo(answer["access_token"])
    click.echo(f"token id {answer['token_id']} (role {answer['role']})", err=True)


@token.command("list")
@remote_options
def token_list(url: str, token: str | None) -> None:
    """List tokens (never their secrets) as JSON lines."""
    for entry in call(url, token, "GET", "/access/api/v1/tokens")["tokens"]:
        click.echo(json.dumps(entry))


@token.command("revoke")
@remote_options
@click.argument("token_id")
def token_revoke(url: str, token: str | None, token_id: str) -> None:
    """Revoke a token by its id."""
    call(url, token, "DELETE", f"/access/api/v1/tokens/{token_id}")
    click.echo(f"revoked {token_id}", err=True)


@main.group()
def keys() -> None:
    """Trust, list and remove the public keys release bundles must be signed with."""


@keys.command("trust")
@remote_options
@click.argument("public_key", type=click.File("r"))
@click.option("--alias", required=True, help="A name for the key on this edge, e.g. dist-main.")
def keys_trust(url: str, token: str | None, public_key: TextIO, alias: str) -> None:
    """Trust an ASCII-armored public key (FILE, or - for stdin)."""
    body = {"alias": alias, "public_key": public_key.read()}
    answer = call(url, token, "POST", "/artifactory/api/security/keys/trusted", body)
    click.echo(f"trusting {answer['fingerprint']} as {answer['alias']}", err=True)


@keys.command("list")
@remote_options
def keys_list(url: str, token: str | None) -> None:
    """List trusted keys as JSON lines."""
    for entry in call(url, token, "GET", "/artifactory/api/security/keys/trusted")["keys"]:
        click.echo(json.dumps(entry))


@keys.command("remove")
@remote_options
@click.argument("alias")
def keys_remove(url: str, token: str | None, alias: str) -> None:
    """Stop trusting a key; bundles signed by it are refused from then on."""
    call(url, token, "DELETE", f"/artifactory/api/security/keys/trusted/{quote(alias, safe='')}")
    click.echo(f"removed {alias}", err=True)


@main.group()
def bundles() -> None:
    """Release bundles distributed to this edge."""


@bundles.command("list")
@remote_options
def bundles_list(url: str, token: str | None) -> None:
    """List the bundles committed on this edge as JSON lines."""
    for entry in call(url, token, "GET", "/artifactory/api/distribution/bundles"):
        click.echo(json.dumps(entry))


@bundles.command("delete")
@remote_options
@click.argument("name")
@click.argument("version")
def bundles_delete(url: str, token: str | None, name: str, version: str) -> None:
    """Remove bundle NAME VERSION from this edge; blobs nothing else references are collected.
    The edge removes part of a big bundle per request: this asks again until it is all gone."""
    while isinstance(answer := call(url, token, "DELETE", protocol.bundle_path(name, version)), dict):
        step = protocol.parse_removal(answer)
        click.echo(f"removing {name} {version}: {step.removed}/{step.total} files", err=True)
    click.echo(f"deleted {name} {version}", err=True)


AUDIT_PAGE = 1000
AUDIT_ACTIONS = ("download", "deploy", "delete", "read", "admin", "distribute", "quarantine", "other", "denied")


@main.command("audit")
@remote_options
@click.option("--since", help="From this time on: 2026-11-01, 2026-11-01T10:00:00Z, or epoch ms.")
@click.option("--until", help="Before this time (a date alone includes that whole day).")
@click.option("--repo", help="Only this repo.")
@click.option("--path", help="Only this path in the repo; a trailing * makes it a prefix.")
@click.option("--ip", help="Only this client address or CIDR block.")
@click.option("--action", type=click.Choice(AUDIT_ACTIONS), help="Only this action; denied: every refusal.")
@click.option("--subject", help="Only this user, token subject or signed URL issuer.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many records [all].")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "text"]), default="jsonl", show_default=True)
def audit(url: str, token: str | None, limit: int | None, fmt: str, **filters: str | None) -> None:
    """Print the audit trail, newest first: who did what, from where, and the answer."""
    params = {k: v for k, v in filters.items() if v is not None}
    left = limit
    while left is None or left > 0:
        page = min(AUDIT_PAGE, left) if left is not None else AUDIT_PAGE
        query = urlencode({**params, "limit": str(page)})  # in the path: 'path' is also call()'s own argument
        answer = call(url, token, "GET", f"/artifactory/api/audit?{query}")
        for record in answer["records"]:
            click.echo(json.dumps(record) if fmt == "jsonl" else _audit_line(record))
        if left is not None:
            left -= len(answer["records"])
        if not answer["next"]:
            break
        params["cursor"] = answer["next"]


def _audit_line(r: dict[str, object]) -> str:
    where = f"{r['repo']}/{r['path'] or ''}" if r["repo"] else "-"
    line = (
        f"{r['time']} {r['clientIp'] or '-'} {r['country'] or '-'} {r['subject']} {r['method']} {r['action']}"
        f" {where} {r['status']} {r['bytes']}"
    )
    if r["aborted"]:
        line += " aborted"
    return line + (f" denied-by: {r['deniedBy']}" if r["deniedBy"] else "")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d``: seconds, strictly."""
    match = re.fullmatch(r"([1-9][0-9]{0,9})([smhd]?)", text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 3600, 90m, 24h or 7d")
    return int(match[1]) * DURATION_UNITS[match[2] or "s"]


@main.command("sign-url")
@remote_options
@click.argument("repo_path")
@click.option("--valid-for", default="24h", show_default=True, help="Lifetime: seconds, or 90m, 24h, 7d.")
@click.option("--client-cidr", help="Only clients in this network may use it, e.g. 198.51.100.0/24.")
def sign_url(url: str, token: str | None, repo_path: str, valid_for: str, client_cidr: str | None) -> None:
    """Print a signed download URL for REPO_PATH (repo/path/to/file) that works without a token."""
    body: dict[str, object] = {"repo_path": "/" + repo_path.lstrip("/"), "valid_for_secs": parse_duration(valid_for)}
    if client_cidr:
        body["client_cidr"] = client_cidr
    click.echo(call(url, token, "POST", "/artifactory/api/signed/url", body))


@main.group("url-keys")
def url_keys() -> None:
    """Keys that sign and verify signed URLs: share, trust, rotate, remove."""


@url_keys.command("list")
@remote_options
def url_keys_list(url: str, token: str | None) -> None:
    """List the keys as JSON lines (public keys as PEM; secrets never)."""
    for entry in call(url, token, "GET", "/artifactory/api/signed/keys")["keys"]:
        click.echo(json.dumps(entry))


@url_keys.command("export")
@remote_options
def url_keys_export(url: str, token: str | None) -> None:
    """Print the kid and PEM public key that sign this edge's URLs, for other edges to trust."""
    answer = call(url, token, "GET", "/artifactory/api/signed/keys")
    key = next((k for k in answer["keys"] if k["signing"]), None)
    if key is None or key["public_key"] is None:
        raise click.ClickException("this edge signs with a shared secret: there is no public key to export")
    click.echo(f"kid {key['kid']}", err=True)
    click.echo(key["public_key"], nl=False)


@url_keys.command("trust")
@remote_options
@click.argument("public_key", type=click.File("r"))
@click.option("--kid", required=True, help="The key id the issuer signs with (see its `url-keys export`).")
def url_keys_trust(url: str, token: str | None, public_key: TextIO, kid: str) -> None:
    """Accept URLs signed by another issuer's Ed25519 key (PEM FILE, or - for stdin)."""
    answer = call(url, token, "POST", "/artifactory/api/signed/keys", {"kid": kid, "public_key": public_key.read()})
    click.echo(f"trusting url-signing key {answer['kid']}", err=True)


@url_keys.command("rotate")
@remote_options
def url_keys_rotate(url: str, token: str | None) -> None:
    """Make a new signing key; URLs signed with the older ones keep working until those are removed."""
    answer = call(url, token, "POST", "/artifactory/api/signed/keys/rotate")
    click.echo(answer["kid"])


@url_keys.command("remove")
@remote_options
@click.argument("kid")
def url_keys_remove(url: str, token: str | None, kid: str) -> None:
    """Remove a key: every URL it signed is refused from now on."""
    call(url, token, "DELETE", f"/artifactory/api/signed/keys/{quote(kid, safe='')}")
    click.echo(f"removed {kid}", err=True)


if __name__ == "__main__":
    sys.exit(main())
