"""The ``s3_server`` fixture: a real SeaweedFS S3 server on loopback for the whole session
(``devstack.seaweed.SeaweedProcess``, which the benchmarks start too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.processes import StartFailed
from devstack.seaweed import SeaweedProcess
from devstack.seaweed import find_weed as _find_weed


def find_weed() -> str:
    """The ``weed`` of this environment; a test that needs it fails, naming what to install."""
    try:
        return _find_weed()
    except StartFailed as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A running SeaweedFS S3 endpoint with one bucket and one access key, for the whole session."""
    find_weed()
    with SeaweedProcess() as server:
        yield server.info
