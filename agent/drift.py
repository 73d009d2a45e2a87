"""Installed files checked against the signed manifest they were installed from.

At install the agent keeps, in its own data directory (not the app's, which an edit to the
app could reach too), each version's file list from the verified manifest:
``DIR/installed/<app>/<version>.json``, path inside the version -> sha256. A drift pass
re-hashes every file of each app's current version at ``drift_rate`` bytes a second (so a
check never competes with the app for the disk) and names what is modified, missing or extra.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from wire.manifest import decode
from wire.runtime import MAX_DRIFT_APPS, MAX_DRIFT_FILES, AppDrift

from .apps import AppRegistry
from .bandwidth import TokenBucket
from .bundle import install_paths
from .durable import read_json, write_json

INSTALLED = "installed"
CHUNK = 256 * 1024


def _kept(data_dir: Path, app: str, version: str) -> Path:
    return data_dir / INSTALLED / app / f"{version}.json"


def keep_manifest(data_dir: Path, app: str, version: str, manifest_text: str) -> None:
    """Keep the file list of a verified manifest for the version being installed."""
    manifest = decode(manifest_text.encode("utf-8"))
    paths = install_paths(manifest)
    files = {paths[a.target]: a.sha256 for a in manifest.artifacts}
    _kept(data_dir, app, version).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(_kept(data_dir, app, version), files)


def forget_manifest(data_dir: Path, app: str, version: str) -> None:
    """A version removed from the device needs its file list no more."""
    _kept(data_dir, app, version).unlink(missing_ok=True)


def kept_files(data_dir: Path, app: str, version: str) -> dict[str, str] | None:
    return read_json(_kept(data_dir, app, version))


class DriftChecker:
    """One pass over every installed app; ``rate`` bytes per second of hashing (0: no cap)."""

    def __init__(self, data_dir: Path, rate: int, sleep: Callable[[float], None] = time.sleep) -> None:
        self.data_dir = data_dir
        self.apps = AppRegistry(data_dir)
        self.bucket = TokenBucket(rate, sleep=sleep) if rate else None

    def check(self) -> tuple[AppDrift, ...]:
        out = []
        for record in self.apps.apps()[:MAX_DRIFT_APPS]:
            if record.version is None:
                continue
            expected = kept_files(self.data_dir, record.name, record.version)
            if expected is None:  # installed before versions were kept: nothing to compare with
                continue
            root = Path(record.install_dir) / "versions" / record.version
            out.append(self.check_version(record.name, record.version, root, expected))
        return tuple(out)

    def check_version(self, app: str, version: str, root: Path, expected: dict[str, str]) -> AppDrift:
        modified, missing = [], []
        for rel, sha256 in sorted(expected.items()):
            digest = self._sha256(root / rel)
            if digest is None:
                missing.append(rel)
            elif digest != sha256:
                modified.append(rel)
        extra = sorted(rel for rel in _files(root) if rel not in expected)
        cut = MAX_DRIFT_FILES
        return AppDrift(app, version, tuple(modified[:cut]), tuple(missing[:cut]), tuple(extra[:cut]))

    def _sha256(self, path: Path) -> str | None:
        if path.is_symlink() or not path.is_file():  # a link where a file was installed is not that file
            return None
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    if self.bucket is not None:
                        self.bucket.take(len(chunk))
                    digest.update(chunk)
        except OSError:
            return None
        return digest.hexdigest()


def _files(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            found.append(os.path.relpath(os.path.join(folder, name), root))
    return found
