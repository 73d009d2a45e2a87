"""``[pull]``: an edge in pull mode polls the Distribution service for its work (edge/puller.py).

Off while ``service_url`` is empty. The credential is the one the service answered when the
edge was registered with ``distribution edge add NAME --mode pull`` (or rotated since), given
as is or in a file that holds it (kept out of the configuration file and the environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from repository.settings import InvalidSetting
from wire.pull import credential_edge

MAX_PARALLEL_BLOBS = 64


@dataclass(frozen=True)
class PullSettings:
    # the Distribution service's base URL, e.g. https://dist.example:8080; "" (the default): off
    service_url: str = ""
    # the edge's credential, or a file holding it (one of the two, when service_url is set)
    credential: str = ""
    credential_file: Path | None = None
    # seconds between polls, each waited with up to a tenth more or less of jitter
    interval: float = 30.0
    # blobs downloaded at once
    parallel_blobs: int = 4

    def __post_init__(self) -> None:
        if self.service_url:
            parts = urlsplit(self.service_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise InvalidSetting("service_url", "must be an http(s) URL with a host, like http://dist:8080")
            if bool(self.credential) == (self.credential_file is not None):
                raise InvalidSetting("credential", "or 'credential_file' must be set (one of the two) in pull mode")
        if self.credential and not credential_edge(self.credential):
            raise InvalidSetting("credential", "is not an edge credential minted by the Distribution service")
        if not 1 <= self.interval <= 86400:
            raise InvalidSetting("interval", "must be 1 to 86400 seconds")
        if not 1 <= self.parallel_blobs <= MAX_PARALLEL_BLOBS:
            raise InvalidSetting("parallel_blobs", f"must be 1 to {MAX_PARALLEL_BLOBS}")

    @property
    def enabled(self) -> bool:
        return bool(self.service_url)

    def read_credential(self) -> str:
        """The credential, read from its file if it is in one; a bad one is an InvalidSetting."""
        if self.credential_file is None:
            return self.credential
        try:
            credential = self.credential_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSetting("credential_file", f"cannot be read: {exc}") from None
        if not credential_edge(credential):
            raise InvalidSetting("credential_file", "does not hold an edge credential minted by the service")
        return credential
