"""The ``edge`` command: ``serve`` runs a node; every other command calls a node's REST API."""

from __future__ import annotations

import json
import sys
from typing import TextIO
from urllib.parse import quote

import click

from repository import cli_support
from repository.cli_support import serve_command
from repository.client import call
from repository.tokens import Role

from . import __version__
from .app import create_app
from .settings import load_edge_settings


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
    )
)
remote_options = cli_support.remote_options("EDGE", "http://127.0.0.1:8082")


@main.group()
def token() -> None:
    """Issue, list and revoke API tokens."""


@token.command("create")
@remote_options
@click.option("--role", type=click.Choice([r.value for r in Role]), default="reader", show_default=True)
@click.option("--subject", help="Who the token is for (defaults to the role).")
@click.option("--description", default="")
@click.option("--expires-in", type=click.IntRange(min=0), default=0, help="Lifetime in seconds (0: never).")
def token_create(
    url: str, token: str | None, role: str, subject: str | None, description: str, expires_in: int
) -> None:
    """Issue a token; prints its secret once."""
    body = {"role": role, "username": subject or role, "description": description, "expires_in": expires_in}
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


if __name__ == "__main__":
    sys.exit(main())
