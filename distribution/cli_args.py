"""Arguments the CLIs check locally before they become part of a URL.

A name like ``1.6.0/../1.6.1`` must never reach a request path, where it would
name something else; the rules are the server's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from wire.errors import WireError
from wire.manifest import check_bundle_name, check_bundle_version
from wire.paths import check_repo_key


def _checked(check: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        try:
            check(value)
        except WireError as exc:
            raise click.BadParameter(exc.message) from None
        return value

    return callback


bundle_name = click.argument("name", callback=_checked(check_bundle_name))
optional_bundle_name = click.argument("name", required=False, callback=_checked(check_bundle_name))
bundle_version = click.argument("version", callback=_checked(check_bundle_version))
repo_key = click.argument("key", callback=_checked(check_repo_key))
edge_name = click.argument("name", callback=_checked(check_repo_key))
