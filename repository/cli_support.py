"""What both CLIs share: the ``serve`` command and the options that find a running service.

Only ``serve`` needs the service itself (its app, settings, server and logging), so only
``serve`` imports it: every other command makes a REST call or two, and importing the whole
service first made each of them take about a second of CPU more.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from aiohttp import web

    from .http.connections import ConnectionLimits
    from .settings import ServiceSettings

F = TypeVar("F", bound=Callable[..., Any])


# Runs a service as several processes when its settings ask for more than one (the edge's
# ``workers``): the settings, the service's name and its connection limits.
Supervise = Callable[[Any, str, "ConnectionLimits"], None]


def imported_when_called(target: str) -> Callable[..., Any]:
    """The function ``target`` names (``"package.module:function"``), imported at its first call:
    what a CLI hands ``serve_command`` without importing the service."""

    def call(*args: Any, **kwargs: Any) -> Any:
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def connection_limits(settings: ServiceSettings) -> ConnectionLimits:
    from .http.connections import ConnectionLimits

    return ConnectionLimits(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
    )


def serve_command(
    name: str,
    *,
    default_data_dir: str,
    default_port: int,
    load: Callable[..., ServiceSettings],
    create_app: Callable[[Any], web.Application],
    supervise: Supervise | None = None,
) -> click.Command:
    """``NAME serve``: settings from file, environment and flags, then run until Ctrl-C or SIGTERM.
    With ``supervise``, a ``--workers`` flag too, and more than one worker runs under it."""

    def command(config: Path | None, data_dir: Path | None, host: str | None, port: int | None, **more: Any) -> None:
        from .logs import setup_logging
        from .serve import Listener, serve
        from .settings import SettingsError

        try:
            settings = load(config, data_dir=data_dir, host=host, port=port, **more)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None
        setup_logging(settings.log_level)
        if supervise is not None and getattr(settings, "workers", 1) > 1:
            supervise(settings, name, connection_limits(settings))
            return
        serve(
            create_app(settings),
            listener=Listener(settings.host, settings.port),
            shutdown_timeout=settings.shutdown_timeout,
            limits=connection_limits(settings),
            name=name,
            event_loop=settings.event_loop,
        )

    if supervise is not None:
        command = click.option(
            "--workers",
            type=int,
            help="Processes serving the port [one per core]; 1: a single process.",
        )(command)
    command = click.option("--port", type=int, help=f"Port to listen on [{default_port}].")(command)
    command = click.option("--host", help="Address to listen on [127.0.0.1].")(command)
    command = click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), help=f"State [{default_data_dir}]."
    )(command)
    command = click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="TOML settings file.")(
        command
    )
    serve_cmd = click.command("serve")(command)
    serve_cmd.help = f"Run the {name} until Ctrl-C or SIGTERM."
    return serve_cmd


def remote_options(env_prefix: str, default_url: str) -> Callable[[F], F]:
    """``--url`` and ``--token`` (``{PREFIX}_URL``, ``{PREFIX}_TOKEN``): every command but serve uses REST."""

    def decorate(fn: F) -> F:
        fn = click.option("--token", envvar=f"{env_prefix}_TOKEN", help=f"API token [${env_prefix}_TOKEN].")(fn)
        return click.option(
            "--url",
            envvar=f"{env_prefix}_URL",
            default=default_url,
            show_default=True,
            help=f"Base URL [${env_prefix}_URL].",
        )(fn)

    return decorate


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """``--json`` prints the API's answer for scripts; otherwise a short human summary."""
    click.echo(json.dumps(data, indent=2) if as_json else human(data))
