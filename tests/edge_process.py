"""The ``edge_server`` fixture: a started edge (``devstack.services.EdgeProcess``) that must stop cleanly.

from tests.edge_process import edge_server  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import EdgeProcess


@pytest.fixture
def edge_server(tmp_path: Path) -> Iterator[EdgeProcess]:
    """A started edge with an empty data directory; it must shut down cleanly (exit 0) on SIGTERM."""
    edge = EdgeProcess(tmp_path / "edge")
    edge.start()
    try:
        yield edge
    finally:
        code = edge.stop()
        # Shown by pytest when the test fails, next to the test's own output.
        print(f"edge log ({edge.log_path}), last lines:\n{edge.log_tail()}")
    if code != 0:
        pytest.fail(f"edge exited with status {code} on SIGTERM, not 0\n{edge.log_tail()}")
