"""Every setting of an edge node, its default, and its checks.

Environment variables are ``EDGE_<NAME>`` and ``EDGE_STORAGE_<NAME>`` for the
storage section, e.g. ``EDGE_ADMIN_TOKEN``, ``EDGE_STORAGE_BACKEND=s3``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repository.settings import ServiceSettings, load_settings


@dataclass(frozen=True)
class EdgeSettings(ServiceSettings):
    data_dir: Path = Path("edge-data")
    port: int = 8082
    node_id: str = "edge"
    # whether anyone may download from artifactory-edge-uploads without a token
    uploads_anonymous_read: bool = True


def load_edge_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> EdgeSettings:
    return load_settings(
        EdgeSettings,
        config_file=config_file,
        env=os.environ if env is None else env,
        env_prefix="EDGE_",
        overrides=flags,
    )
