"""The ``edge`` command: ``serve`` runs a node; every other command calls a node's REST API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repository.logs import setup_logging
from repository.settings import SettingsError
from repository.tokens import Role

from . import __version__
from .client import call


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Edge node of the artifact distribution system."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Catalog and blobs [edge-data].")
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [8082].")
def serve(config: Path | None, data_dir: Path | None, host: str | None, port: int | None) -> None:
    """Run an edge node until Ctrl-C or SIGTERM."""
    from repository.serve import serve as run

    from .app import create_app
    from .settings import load_edge_settings

    try:
        settings = load_edge_settings(config, data_dir=data_dir, host=host, port=port)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(settings.log_level)
    run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout,
        name="edge",
    )


def remote_options(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--token", envvar="EDGE_TOKEN", help="Admin token [$EDGE_TOKEN].")(fn)
    return click.option(
        "--url",
        envvar="EDGE_URL",
        default="http://127.0.0.1:8082",
        show_default=True,
        help="Edge base URL [$EDGE_URL].",
    )(fn)


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


if __name__ == "__main__":
    sys.exit(main())
