"""Feedback that is never lost: each report is a file in ``DIR/outbox`` until the control plane took it.

A report is written (durably) before anything is sent, and removed only after the
server answered 2xx, so a crash or a server that is down only delays it. Reports go
out in the order they were made. A report the server refuses (4xx other than 401) is
logged and dropped: sending it again would not change the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from wire.fleet import FEEDBACK, Feedback

from .durable import read_json, write_json
from .http import CredentialRevoked, Http, Refused
from .identity import Identity

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "outbox"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _names(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.name.endswith(".json") and not p.name.startswith("."))

    def put(self, feedback: Feedback) -> None:
        stamped = feedback if feedback.time else replace(feedback, time=int(time.time() * 1000))
        with self._lock:
            names = self._names()
            seq = int(names[-1].stem) + 1 if names else 1
            write_json(self.dir / f"{seq:012d}.json", stamped.to_json())
        log.info(
            "feedback %s: %s%s",
            stamped.action_id,
            stamped.state.value,
            f" ({stamped.message})" if stamped.message else "",
        )

    def pending(self) -> list[Feedback]:
        with self._lock:
            return [Feedback.from_json(read_json(p)) for p in self._names()]

    def flush(self, http: Http, identity: Identity) -> None:
        """Send every queued report in order; stops at the first the server cannot take now.

        Raises ``ServerUnavailable`` (kept for later) and ``CredentialRevoked``."""
        with self._lock:
            for path in self._names():
                body = read_json(path)
                try:
                    http.call("POST", identity.url(FEEDBACK), body, identity.headers)
                except CredentialRevoked:
                    raise
                except Refused as exc:
                    log.error("feedback %s refused by the server (%s); dropped", path.name, exc)
                path.unlink()
