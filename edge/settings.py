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

MiB = 1024 * 1024


@dataclass(frozen=True)
class EdgeSettings(ServiceSettings):
    data_dir: Path = Path("edge-data")
    port: int = 8082
    node_id: str = "edge"
    # whether anyone may download from artifactory-edge-uploads without a token
    uploads_anonymous_read: bool = True
    # seconds a distribution transaction may stay uncommitted before it expires and its staging goes
    transaction_ttl: int = 24 * 3600
    # largest body of a transaction start (the manifest as a JSON string, plus its signature)
    max_manifest_bytes: int = 96 * MiB
    # a blob upload receiving fewer than upload_min_rate bytes/s in one of the consecutive
    # upload_rate_window-second windows from the start of its body, or still running
    # upload_deadline seconds after its body began, is cut off (408) and its staged bytes are
    # freed; 0 turns either rule off
    upload_min_rate: int = 10 * 1024
    upload_rate_window: float = 30.0
    upload_deadline: float = 3600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.transaction_ttl < 1:
            raise ValueError("setting 'transaction_ttl' must be at least 1 second")
        if self.max_manifest_bytes < 1024:
            raise ValueError("setting 'max_manifest_bytes' must be at least 1024")
        if self.upload_min_rate < 0 or self.upload_deadline < 0:
            raise ValueError("settings 'upload_min_rate' and 'upload_deadline' must be 0 (off) or more")
        if not 0 < self.upload_rate_window <= 3600:
            raise ValueError("setting 'upload_rate_window' must be more than 0 and at most 3600 seconds")

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def trusted_keys_dir(self) -> Path:
        return self.data_dir / "trusted-keys"


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
