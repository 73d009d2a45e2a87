"""A full disk told apart from the failures of tools that do not say why they failed.

gpg writes a lock file in its home for every run, even to check a signature. On a full
disk that write fails and gpg exits non-zero, which reads exactly like a bad signature or
a key gpg will not import: a node would refuse a good bundle with a 422 (which the
Distribution service does not retry) or a good key with a 400. Callers ask ``check_room``
after gpg fails, so a full disk is answered as what it is: 507, nothing changed, try again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from storage_backends import StorageFull
from storage_backends.errors import DISK_FULL_ERRNOS

# As much as gpg's lock file holds (its process id and host name), rounded up to a sector.
PROBE_BYTES = 512


def check_room(directory: Path, what: str) -> None:
    """Raise StorageFull unless a small file can be written and flushed in ``directory`` now."""
    try:
        fd, name = tempfile.mkstemp(prefix=".room-", dir=directory)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise StorageFull(f"{what} ({directory}) has no room: {exc.strerror}") from None
        return  # some other trouble: the caller's own error says more than this probe could
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise StorageFull(f"{what} ({directory}) has no room: {exc.strerror}") from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
