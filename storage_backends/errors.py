"""Errors every blob backend raises, so callers never see boto3 or OSError details."""

from __future__ import annotations

import errno


class StorageError(Exception):
    """The backend could not do what was asked (I/O failure, S3 error, full disk)."""


class StorageFull(StorageError):
    """No space left (or quota or file size limit reached): an answer for the client, not a fault."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def os_storage_error(exc: OSError, what: str) -> StorageError:
    """The StorageError for a failed file operation; a full disk gets its own class."""
    cls = StorageFull if exc.errno in DISK_FULL_ERRNOS else StorageError
    return cls(f"{what}: {exc.strerror or exc}")


class BlobNotFound(StorageError):
    def __init__(self, sha256: str) -> None:
        super().__init__(f"blob {sha256} not found")
        self.sha256 = sha256


class InvalidOffset(StorageError):
    def __init__(self, sha256: str, offset: int, size: int) -> None:
        super().__init__(f"offset {offset} is outside blob {sha256} of {size} bytes")
        self.sha256 = sha256
        self.offset = offset
        self.size = size


class DigestMismatch(StorageError):
    """The bytes written do not match what the caller said they would be.

    Raised by ``BlobWriter.commit``; the blob is not published.
    """

    def __init__(self, field: str, expected: str | int, actual: str | int) -> None:
        super().__init__(f"{field} mismatch: expected {expected}, received {actual}")
        self.field = field
        self.expected = expected
        self.actual = actual


class InvalidDigest(StorageError):
    """A blob name that is not a lowercase hex SHA-256: refused before it reaches a path or key."""

    def __init__(self, value: str) -> None:
        super().__init__(f"not a sha256 digest: {value!r}")
        self.value = value


class BlobsNotDeleted(StorageError):
    """``delete_many`` could not delete these blobs (the others it was given are gone); they may
    still be stored, so the caller keeps them to try again."""

    def __init__(self, sha256s: list[str], reason: str) -> None:
        shown = ", ".join(sha256s[:3]) + (f" and {len(sha256s) - 3} more" if len(sha256s) > 3 else "")
        super().__init__(f"could not delete {len(sha256s)} blob(s) ({shown}): {reason}")
        self.sha256s = sha256s
