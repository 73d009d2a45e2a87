"""Who this device is to the control plane: ``DIR/identity.json``, mode 0600 in a 0700 directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from wire.fleet import device_headers

from .durable import read_json, write_json


class NotEnrolled(Exception):
    """No identity in the data directory: run ``node-agent enroll`` first."""


@dataclass(frozen=True)
class Identity:
    server: str  # the control plane's base URL
    device_id: str
    name: str
    group: str
    credential: str
    poll_interval: int

    def url(self, path: str) -> str:
        return self.server.rstrip("/") + path

    @property
    def headers(self) -> dict[str, str]:
        return device_headers(self.credential)


def save_identity(path: Path, identity: Identity) -> None:
    write_json(path, asdict(identity), 0o600)


def load_identity(path: Path) -> Identity:
    obj = read_json(path)
    if obj is None:
        raise NotEnrolled(f"no identity in {path.parent}: enroll this device first (node-agent enroll)")
    return Identity(**obj)
