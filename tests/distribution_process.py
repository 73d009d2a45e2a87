"""The ``distribution_server`` fixture: a started ``devstack.services.DistributionProcess`` that must stop cleanly.

from tests.distribution_process import distribution_server_fixture  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import DistributionProcess


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
