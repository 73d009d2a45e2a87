"""Errors every blob backend raises, so callers never see boto3 or OSError details."""

from __future__ import annotations


class StorageError(Exception):
    """The backend could not do what was asked (I/O failure, S3 error, full disk)."""


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
