"""The apps this device runs: ``DIR/apps.json`` (name -> install dir and the version before),
with the version itself always read from the app's ``current`` link, the truth on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wire.fleet import InstalledApp

from .durable import read_json, write_json


@dataclass(frozen=True)
class AppRecord:
    name: str
    install_dir: str
    version: str | None
    previous: str | None


class AppRegistry:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "apps.json"

    def _load(self) -> dict[str, dict[str, str | None]]:
        return read_json(self.path) or {}

    def record(self, name: str, install_dir: str, previous: str | None) -> None:
        apps = self._load()
        apps[name] = {"install_dir": install_dir, "previous": previous}
        write_json(self.path, apps)

    def apps(self) -> list[AppRecord]:
        out = []
        for name, entry in sorted(self._load().items()):
            install_dir = str(entry["install_dir"])
            try:
                version: str | None = Path((Path(install_dir) / "current").readlink()).name
            except OSError:
                version = None
            out.append(AppRecord(name, install_dir, version, entry.get("previous")))
        return out

    def installed(self) -> dict[str, InstalledApp]:
        return {a.name: InstalledApp(a.version, a.previous) for a in self.apps()}
