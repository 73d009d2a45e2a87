"""Blob stores by name: the rest of the system never imports a backend module directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import BlobInfo, BlobWriter, Digests, StorageBackend, check_sha256, content_disposition
from .errors import (
    BlobNotFound,
    BlobsNotDeleted,
    DigestMismatch,
    InvalidDigest,
    InvalidOffset,
    StorageError,
    StorageFull,
    os_storage_error,
)
from .s3_common import MAX_WRITE_CONCURRENCY
from .staging_area import StagedChunk, StagingArea
from .threads import open_in_thread

BACKEND_NAMES = ("local", "s3")

__all__ = [
    "BACKEND_NAMES",
    "BlobInfo",
    "BlobNotFound",
    "BlobsNotDeleted",
    "BlobWriter",
    "DigestMismatch",
    "Digests",
    "InvalidDigest",
    "InvalidOffset",
    "MAX_WRITE_CONCURRENCY",
    "StagedChunk",
    "StagingArea",
    "StorageBackend",
    "StorageError",
    "StorageFull",
    "open_in_thread",
    "os_storage_error",
    "check_sha256",
    "content_disposition",
    "create_backend",
]


def create_backend(name: str, params: Mapping[str, Any]) -> StorageBackend:
    """Build a backend from its settings section; unknown names and keys are errors."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**params)
    if name == "s3":
        from .s3 import S3Backend

        return S3Backend(**params)
    raise ValueError(f"unknown storage backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
