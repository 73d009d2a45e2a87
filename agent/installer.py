"""An app's install directory: ``versions/<version>/`` per version and one ``current`` link.

A version directory is built under a temporary name and renamed into place, and a
marker ``versions/.<version>.whole`` is written (durably) after it: a version with its
marker is complete and was verified against its signed manifest. ``current`` is
switched by making a new symlink and renaming it over the old one, then fsyncing the
directory, so at every instant it names one whole version (or nothing).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from wire.fleet import Action, AppSpec

from .durable import fsync_dir, write_atomic

log = logging.getLogger(__name__)

VERSIONS = "versions"
CURRENT = "current"
COPY_CHUNK = 1 << 20


class Installer:
    def __init__(self, app: AppSpec) -> None:
        self.app = app
        self.base = Path(app.install_dir)
        self.versions = self.base / VERSIONS
        self.current = self.base / CURRENT

    def version_dir(self, version: str) -> Path:
        return self.versions / version

    def _marker(self, version: str) -> Path:
        return self.versions / f".{version}.whole"

    def current_version(self) -> str | None:
        """The version ``current`` names, or None when there is none."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:  # none, or not a link this agent made (switching over it then fails, loudly)
            return None

    def is_whole(self, version: str) -> bool:
        return self._marker(version).is_file() and self.version_dir(version).is_dir()

    def whole_versions(self) -> list[str]:
        """Versions on disk that are whole, the one made current longest ago first."""
        if not self.versions.is_dir():
            return []
        found = [(m.stat().st_mtime_ns, m.name[1 : -len(".whole")]) for m in self.versions.glob(".*.whole")]
        return [v for _, v in sorted(found) if self.version_dir(v).is_dir()]

    def build(self, version: str, files: Mapping[str, Path]) -> Path:
        """Make ``versions/<version>`` from ``files`` (relative path -> verified staged file), whole or not at all."""
        if self.is_whole(version):
            return self.version_dir(version)
        self.versions.mkdir(parents=True, exist_ok=True)
        self.discard(version)
        tmp = self.versions / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for rel, source in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_durably(source, target)
        for folder in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, key=lambda p: -len(p.parts)):
            fsync_dir(folder)
        os.rename(tmp, self.version_dir(version))
        fsync_dir(self.versions)
        write_atomic(self._marker(version), json.dumps({"version": version, "installed": time.time()}).encode(), 0o644)
        return self.version_dir(version)

    def discard(self, version: str) -> None:
        """Remove a version directory and its marker (marker first: never a marker without its files)."""
        self._marker(version).unlink(missing_ok=True)
        shutil.rmtree(self.version_dir(version), ignore_errors=True)

    def switch(self, version: str | None) -> None:
        """Point ``current`` at ``version`` (None: remove it), atomically and durably."""
        self.base.mkdir(parents=True, exist_ok=True)
        if version is None:
            self.current.unlink(missing_ok=True)
        else:
            tmp = self.base / f".{CURRENT}.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(Path(VERSIONS) / version, target_is_directory=True)
            os.replace(tmp, self.current)
            if self._marker(version).exists():
                os.utime(self._marker(version))  # the newest in use: what pruning keeps longest
        fsync_dir(self.base)
        log.info("%s: current is now %s", self.app.name, version or "nothing")

    def prune(self, keep: int, previous: str | None) -> list[str]:
        """Remove all but the ``keep`` newest whole versions; never the current or the previous one."""
        whole = self.whole_versions()
        spared = set(whole[-keep:]) | {self.current_version(), previous}
        removed = [v for v in whole if v not in spared]
        for version in removed:
            self.discard(version)
        for leftover in self.versions.glob(".tmp-*") if self.versions.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)
        return removed


def placed(action: Action, root: Path | None) -> Action:
    """``action`` with its app's install_dir under ``root`` (the ``install_root`` setting), so
    several agents on one host never share a ``current`` link; unchanged without a root."""
    if root is None:
        return action
    install_dir = str(root / action.app.install_dir.lstrip("/"))
    return replace(action, app=replace(action.app, install_dir=install_dir))


def _copy_durably(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
