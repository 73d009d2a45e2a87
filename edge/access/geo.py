"""Countries from a MaxMind-format (.mmdb) database, reloaded when its file changes.

``country`` answers the record's ``country.iso_code``, else its
``registered_country.iso_code``, else None: for an address not in the database, an
IPv6 address in an IPv4-only database, a record without either, and whenever
there is no usable database (not configured, missing, unreadable, corrupt). The
rules turn None into the configured ``geo_unknown`` answer.

The database is read from a private snapshot: a copy the edge makes in its data dir,
opens, and unlinks at once. Lookups then never see a file that someone rewrites in
place (``cp new.mmdb GeoLite2-Country.mmdb`` truncates the file others have mapped,
which could kill the process), and the fast C reader can still map it.

A background task looks at the file's inode, size and mtime every ``interval``
seconds, in a thread; when they change it loads the new file in a thread and swaps it
in on the event loop, so lookups never wait for a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from .context import IPAddress

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
DAY = 24 * 3600.0
try:
    import maxminddb.extension  # noqa: F401  (the C reader: a lookup costs microseconds)

    READ_MODE = maxminddb.MODE_MMAP_EXT
except ImportError:  # pure Python: reads the snapshot into memory
    READ_MODE = maxminddb.MODE_MEMORY

Signature = tuple[int, int, int, int]


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def country_of(record: Any) -> str | None:
    """``country.iso_code``, falling back to ``registered_country.iso_code``."""
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        section = record.get(key)
        if isinstance(section, dict):
            code = section.get("iso_code")
            if isinstance(code, str) and code:
                return code.upper()
    return None


class GeoDatabase:
    def __init__(self, path: Path | None, snapshot_dir: Path, interval: float = CHECK_INTERVAL) -> None:
        self.path = path
        self._snapshot_dir = snapshot_dir
        self._interval = interval
        self._reader: Any = None
        self._signature: Signature | None = None
        self.loads = 0  # how many times a file was (re)loaded or dropped: for logs and tests

    @property
    def loaded(self) -> bool:
        return self._reader is not None

    def problem(self, max_age_days: int, now: float) -> str | None:
        """Why the database cannot be trusted for readiness: missing or unusable, or built
        more than ``max_age_days`` ago (0: any age will do); None when it can."""
        reader = self._reader
        if reader is None:
            return f"geo database {self.path} is missing or not a usable database"
        age_days = (now - reader.metadata().build_epoch) / DAY
        if max_age_days and age_days > max_age_days:
            return (
                f"geo database {self.path} is stale: built {age_days:.0f} days ago,"
                f" more than access.geoip_max_age_days ({max_age_days})"
            )
        return None

    def country(self, address: IPAddress | None) -> str | None:
        reader = self._reader
        if reader is None or address is None:
            return None
        try:
            return country_of(reader.get(address))
        except (ValueError, InvalidDatabaseError):
            # an IPv6 address in an IPv4-only database, or a corrupt tree
            return None

    async def refresh(self) -> bool:
        """Reload if the file changed since the last look; answers whether anything changed."""
        if self.path is None:
            return False
        signature = await asyncio.to_thread(_signature, self.path)
        if signature == self._signature:
            return False
        reader = await asyncio.to_thread(self._open, signature) if signature is not None else None
        old, self._reader, self._signature = self._reader, reader, signature
        self.loads += 1
        if old is not None:
            await asyncio.to_thread(old.close)
        if reader is None and signature is None:
            log.warning("geo database %s is missing: every country is unknown", self.path)
        elif reader is not None:
            meta = reader.metadata()
            log.info("geo database %s loaded (%s, built %s)", self.path, meta.database_type, meta.build_epoch)
        return True

    def _open(self, signature: Signature) -> Any:
        """A reader on a private snapshot of the file, or None (logged) if it is not a usable database."""
        assert self.path is not None
        self._snapshot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, snapshot = tempfile.mkstemp(prefix="geo-", suffix=".mmdb", dir=self._snapshot_dir)
        try:
            with os.fdopen(fd, "wb") as out, open(self.path, "rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
            return maxminddb.open_database(snapshot, READ_MODE)
        except (OSError, ValueError, InvalidDatabaseError) as exc:
            log.warning("geo database %s cannot be read (%s): every country is unknown", self.path, exc)
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(snapshot)  # a mapped snapshot lives on until its reader closes

    def clear_snapshots(self) -> None:
        """Snapshots a crash left behind (normally each is unlinked as soon as it is open)."""
        if self._snapshot_dir.is_dir():
            for leftover in self._snapshot_dir.glob("geo-*.mmdb"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    async def watch(self) -> None:
        """Look for a changed file every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:  # a reload must never stop the watching
                log.exception("geo database %s: reload failed", self.path)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.to_thread(reader.close)
