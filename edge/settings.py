"""Every setting of an edge node, its default, and its checks.

Environment variables are ``EDGE_<NAME>`` and ``EDGE_STORAGE_<NAME>`` for the
storage section, e.g. ``EDGE_ADMIN_TOKEN``, ``EDGE_STORAGE_BACKEND=s3``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repository.settings import load_settings
from storage_backends import BACKEND_NAMES

GiB = 1024**3


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "local"
    # local: blobs live under data_dir/blobs unless a root is given
    root: Path | None = None
    # s3
    endpoint_url: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # downloads from a backend without local files: presigned redirect, or stream through the edge
    redirect_downloads: bool = True
    presign_expiry: int = 300

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"setting 'storage.backend' must be one of {', '.join(BACKEND_NAMES)}")
        if self.backend == "s3" and not self.bucket:
            raise ValueError("setting 'storage.bucket' is required with the s3 backend")
        if not 1 <= self.presign_expiry <= 7 * 24 * 3600:
            raise ValueError("setting 'storage.presign_expiry' must be 1 to 604800 seconds")

    def backend_params(self, data_dir: Path) -> dict[str, Any]:
        if self.backend == "local":
            return {"root": self.root or data_dir / "blobs"}
        return {
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }


@dataclass(frozen=True)
class EdgeSettings:
    data_dir: Path = Path("edge-data")
    host: str = "127.0.0.1"
    port: int = 8082
    node_id: str = "edge"
    admin_token: str | None = None
    # whether anyone may download from artifactory-edge-uploads without a token
    uploads_anonymous_read: bool = True
    max_upload_bytes: int = 10 * GiB
    shutdown_timeout: float = 60.0
    log_level: str = "INFO"
    storage: StorageSettings = field(default_factory=StorageSettings)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("setting 'port' must be 0 to 65535")
        if self.max_upload_bytes < 1:
            raise ValueError("setting 'max_upload_bytes' must be positive")
        if self.admin_token is not None and len(self.admin_token) < 6:
            raise ValueError("setting 'admin_token' must be at least 6 characters")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("setting 'log_level' must be DEBUG, INFO, WARNING or ERROR")

    @property
    def database_path(self) -> Path:
        return self.data_dir / "catalog.db"


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
