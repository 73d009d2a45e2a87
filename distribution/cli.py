"""The ``distribution`` command. Its commands arrive with the Distribution service."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Distribution service of the artifact distribution system (not built yet)."""
