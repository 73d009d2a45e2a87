"""Where the agent is in an action: ``DIR/journal.json``, rewritten atomically before each step.

Recovery after a crash or a power cut reads it and resumes or rolls back: a lookup,
not a guess. The last finished action stays in it with its ``outcome``.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from wire.fleet import Action

from .durable import read_json, write_json

log = logging.getLogger(__name__)


class Step(StrEnum):
    """The steps of an install, in order; the journal names the last one begun."""

    ACCEPTED = "accepted"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"  # every file in staging matches the signed manifest
    SCHEDULED = "scheduled"  # verified, waiting for the maintenance window
    UNPACKING = "unpacking"  # building versions/<version>; current untouched
    UNPACKED = "unpacked"  # versions/<version> whole, marker written, pre_install done
    SWITCHED = "switched"  # current names the new version
    RESTARTING = "restarting"
    CHECKING = "checking"
    ROLLING_BACK = "rolling_back"
    DONE = "done"


# Steps after which ``current`` may name a version that has not passed its health check:
# recovery from them rolls back.
LIVE_STEPS = frozenset({Step.SWITCHED, Step.RESTARTING, Step.CHECKING, Step.ROLLING_BACK})


@dataclass
class Entry:
    action: Action
    step: Step
    previous: str | None = None  # the version current named before this action
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.to_json(),
            "step": self.step.value,
            "previous": self.previous,
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Entry:
        return cls(Action.from_json(obj["action"]), Step(obj["step"]), obj.get("previous"), obj.get("outcome") or {})


class Journal:
    def __init__(self, data_dir: Path, stop_at: str | None = None) -> None:
        self.path = data_dir / "journal.json"
        self.stop_at = stop_at

    def load(self) -> Entry | None:
        obj = read_json(self.path)
        return None if obj is None else Entry.from_json(obj)

    def save(self, entry: Entry, step: Step) -> None:
        entry.step = step
        write_json(self.path, entry.to_json())
        self.checkpoint(step.value)

    def checkpoint(self, name: str) -> None:
        """The test hook: with ``NODE_AGENT_STOP_AT=name`` the agent kills itself here, as a power cut would."""
        if self.stop_at == name:
            log.warning("stopping at %s (NODE_AGENT_STOP_AT)", name)
            os.kill(os.getpid(), signal.SIGKILL)
