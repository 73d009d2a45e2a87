"""The ``distribution`` command imports the service only to serve it: every other command makes a
REST call or two, and importing the service, its database layer and its plugins' apps first made
each one take about a second of CPU more (repository/cli_support.py)."""

from __future__ import annotations

import subprocess
import sys

# what only a running service needs: its app, its plugins' apps, its database layer, aiohttp's server
SERVICE_ONLY = ("sqlalchemy", "sqlite_utils", "aiohttp.web", "distribution.app", "fleet.app", "console.routes")


def modules_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_the_cli_with_its_plugins_commands_imports_no_part_of_the_service() -> None:
    loaded = modules_after("from distribution.cli import main; assert 'fleet' in main.commands")
    assert [m for m in loaded if m.startswith(SERVICE_ONLY)] == []


def test_the_plugins_still_hand_the_service_their_migrations_and_setup() -> None:
    loaded = modules_after(
        "from distribution.plugins import plugins\n"
        "assert all(p.migrations and callable(p.setup_app) for p in plugins())"
    )
    assert "sqlite_utils" in loaded  # what the migrations are made of, imported once asked for
