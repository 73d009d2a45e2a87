"""What the S3 backend and its writer share: limits, and boto3 errors translated once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from .errors import BlobNotFound, StorageError

T = TypeVar("T")
MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
COPY_MULTIPART_THRESHOLD = 5 * GiB  # CopyObject's limit; above it the managed copy goes part by part
COPY_PART_SIZE = 512 * MiB
OCTETS = "application/octet-stream"
MAX_WRITE_CONCURRENCY = 64  # S3 write requests in flight at once, at most (a setting)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def s3_errors(what: str, sha256: str | None = None) -> Iterator[None]:
    """Translate boto3 failures (HTTP errors, refused connections, time-outs, broken
    streams) so callers only ever see the errors in errors.py."""
    try:
        yield
    except ClientError as exc:
        if sha256 is not None and error_code(exc) in NOT_FOUND_CODES:
            raise BlobNotFound(sha256) from None
        raise StorageError(f"S3 {what} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 {what} failed: {exc}") from exc


def guarded(what: str, fn: Callable[..., T], *args: Any) -> T:
    """One boto3 call, made in a worker thread, with its errors translated."""
    with s3_errors(what):
        return fn(*args)
