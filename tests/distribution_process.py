"""The Distribution service as a real process, for end-to-end tests over HTTP and the CLI.

``distribution serve`` runs from this interpreter's environment on 127.0.0.1, on a
port chosen at run time, with its own data directory (and so its own GnuPG home and
signing key), an admin token given through ``DISTRIBUTION_ADMIN_TOKEN`` and the
source repo ``releases-local`` (``DISTRIBUTION_REPOS``). Everything else (free
port, readiness by ping, SIGTERM stop that must exit 0, log tail on failure) is
``tests.edge_process.EdgeProcess``.

    from tests.distribution_process import DistributionProcess, distribution_server_fixture  # noqa: F401
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.edge_process import EdgeProcess

SOURCE_REPO = "releases-local"


def find_distribution() -> Path:
    """The ``distribution`` console script installed next to this interpreter."""
    program = Path(sys.executable).parent / "distribution"
    if not (program.is_file() and os.access(program, os.X_OK)):
        pytest.fail(f"no 'distribution' executable beside {sys.executable}: pip install -e '.[test]' into it")
    return program


def distribution_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any DISTRIBUTION_* or EDGE_* setting a developer exported, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTRIBUTION_", "EDGE_"))}
    env.update(extra)
    return env


class DistributionProcess(EdgeProcess):
    """One ``distribution serve`` process; ``start()`` returns once it answers its ping.

    ``base_dir`` holds ``data/`` (catalog, blobs, bundles, GnuPG home) and
    ``distribution.log``. Starting again after ``stop()`` reuses the data
    directory (and the port when still free): bundles and keys must survive.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        admin_token: str | None = None,
        repos: str = SOURCE_REPO,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_dir, admin_token=admin_token, config=config, env=env)
        self.log_path = self.base_dir / "distribution.log"
        self.repos = repos

    program = "distribution"

    def executable(self) -> Path:
        return find_distribution()

    def environment(self) -> dict[str, str]:
        return distribution_environment(
            {"DISTRIBUTION_ADMIN_TOKEN": self.admin_token, "DISTRIBUTION_REPOS": self.repos, **self.extra_env}
        )

    def __enter__(self) -> DistributionProcess:
        self.start()
        return self


def run_for_test(service: DistributionProcess) -> Iterator[DistributionProcess]:
    """Start ``service``, yield it, stop it; a stop that is not a clean exit 0 fails the test."""
    service.start()
    try:
        yield service
    finally:
        code = service.stop()
        # Shown by pytest when the test fails, next to the test's own output.
        print(f"distribution log ({service.log_path}), last lines:\n{service.log_tail()}")
    if code != 0:
        pytest.fail(f"distribution exited with status {code} on SIGTERM, not 0\n{service.log_tail()}")


@pytest.fixture(name="distribution_server")
def distribution_server_fixture(tmp_path: Path) -> Iterator[DistributionProcess]:
    """A started service with an empty data directory; it must shut down cleanly (exit 0) on SIGTERM."""
    yield from run_for_test(DistributionProcess(tmp_path / "distribution"))
