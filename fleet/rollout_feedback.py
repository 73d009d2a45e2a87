"""What a device's report changes, and the phase machine it drives, in one transaction.

A report (``wire.fleet.Feedback``) names an action; the action names a device row of a
deployment. The row takes the reported state (the device's own report is the truth), the
phase's counts follow it, and the deployment is evaluated: the next phase starts when the
current one reached its success threshold, the deployment halts when a started phase's
failures pass the limit, and it completes when every device finished. All of it is one
transaction on the writer (SERIALIZABLE on PostgreSQL), and a phase advances only from the
phase it was read at, so two service replicas never advance it twice.

Refusals change nothing: an action that is not the device's is a 404; a state other than
the terminal one the device reported before is a 409; the same report again is a success.
A terminal state the control plane decided (canceled before the device began, rejected as a
downgrade) is replaced by the device's own report, which is the truth.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from distribution.webhook_events import DEPLOYMENT_COMPLETED, DEPLOYMENT_HALTED, PHASE_ADVANCED, Publisher
from repository.catalog import now_ms
from repository.errors import Conflict, NotFound
from repository.sql import Sql
from wire.fleet import TERMINAL_STATES, Feedback, FeedbackState

from .rollout_plan import Amount, Counts, next_phase

PENDING = "pending"
RUNNING, PAUSED, HALTED, COMPLETED, CANCELED, ROLLED_BACK = (
    "running",
    "paused",
    "halted",
    "completed",
    "canceled",
    "rolled_back",
)
TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
COUNTED = ("succeeded", "failed", "rejected", "canceled")  # the terminal states, as fleet_phases names them
OPEN = [PENDING, *(s.value for s in FeedbackState if s.value not in TERMINAL)]
ACTION_RE = re.compile(r"d([0-9]{1,18})\.s([0-9]{1,18})(\.rollback)?")
# reports kept per action (the row holds the latest; these are its history)
HISTORY = 20


@dataclass(frozen=True)
class ActionRef:
    deployment: int
    seq: int
    rollback: bool


def parse_action(action_id: str) -> ActionRef:
    match = ACTION_RE.fullmatch(action_id)
    if match is None:
        raise NotFound(f"No action '{action_id}' for this device")
    return ActionRef(int(match[1]), int(match[2]), match[3] is not None)


def recount(db: Sql, dep_id: int) -> None:
    """Count every phase's outcomes again from the device rows (after a change of many rows)."""
    counts: dict[int, dict[str, int]] = {}
    for phase, state, count in db.execute(
        "SELECT phase, state, count(*) FROM fleet_targets WHERE deployment_id = :id GROUP BY phase, state",
        {"id": dep_id},
    ):
        counts.setdefault(phase, {})[state] = count
    for phase, found in counts.items():
        db.execute(
            "UPDATE fleet_phases SET succeeded = :succeeded, failed = :failed, rejected = :rejected,"
            " canceled = :canceled WHERE deployment_id = :id AND phase = :phase",
            {"id": dep_id, "phase": phase, **{s: found.get(s, 0) for s in COUNTED}},
        )


def still_open(db: Sql, dep_id: int) -> bool:
    """Whether a device of the deployment has an install or a rollback still to finish."""
    return (
        db.scalar(
            "SELECT 1 FROM fleet_targets WHERE deployment_id = :id AND (state IN :open OR rb_state IN :open) LIMIT 1",
            {"id": dep_id, "open": OPEN},
        )
        is not None
    )


class Deployments:
    """The phase machine over one connection, inside the caller's transaction."""

    def __init__(self, db: Sql, publish: Publisher | None = None) -> None:
        self.db = db
        # the service's webhook events, published in this transaction (none where it has no webhooks)
        self.publish = publish

    def phases(self, dep_id: int) -> list[Counts]:
        rows = self.db.execute(
            "SELECT size, succeeded, failed, rejected, canceled FROM fleet_phases WHERE deployment_id = :id"
            " ORDER BY phase",
            {"id": dep_id},
        )
        return [Counts(*r) for r in rows]

    def evaluate(self, dep_id: int) -> bool:
        """Advance, halt or complete a running deployment; answers whether it changed."""
        row = self.db.execute(
            "SELECT state, phase, success_threshold, halt_on_failures, app, version FROM fleet_deployments"
            " WHERE id = :id",
            {"id": dep_id},
        ).one()
        state, current, success, halt, app, version = row
        if state != RUNNING:
            return False
        phases = self.phases(dep_id)
        phase, halted = next_phase(phases, current, Amount.stored(success), Amount.stored(halt))
        if halted:
            state = HALTED
            message = f"Halted: failures in phase {phase + 1} passed {halt}"
        elif phase == len(phases) - 1 and all(c.finished == c.size for c in phases):
            state, message = COMPLETED, ""
        elif phase == current:
            return False
        else:
            message = ""
        changed = self.db.execute(
            "UPDATE fleet_deployments SET state = :state, phase = :phase, message = :message, updated = :at,"
            " done = :done WHERE id = :id AND phase = :current AND state = :running",
            {
                "id": dep_id,
                "state": state,
                "phase": phase,
                "message": message,
                "at": now_ms(),
                "done": int(state == COMPLETED),
                "current": current,
                "running": RUNNING,
            },
        ).rowcount
        if changed and self.publish is not None:
            event = {HALTED: DEPLOYMENT_HALTED, COMPLETED: DEPLOYMENT_COMPLETED}.get(state, PHASE_ADVANCED)
            data = {"deployment_id": dep_id, "app": app, "version": version, "phase": phase + 1, "state": state}
            self.publish(self.db, event, data | {"from_phase": current + 1, "message": message})
        return bool(changed)

    def settle(self, dep_id: int, state: str) -> bool:
        """After a device row changed: evaluate a running deployment, or mark a canceled or
        rolled-back one done once nothing is left to finish."""
        if state == RUNNING:
            return self.evaluate(dep_id)
        if state in (CANCELED, ROLLED_BACK) and not still_open(self.db, dep_id):
            self.db.execute("UPDATE fleet_deployments SET done = 1 WHERE id = :id", {"id": dep_id})
            return True
        return False

    def count(self, dep_id: int, phase: int, old: str, new: str) -> None:
        """Move a device from ``old`` to ``new`` in its phase's counts."""
        deltas = {s: (s == new) - (s == old) for s in COUNTED if (s == new) != (s == old)}
        if deltas:
            sets = ", ".join(f"{s} = {s} + :{s}" for s in deltas)
            self.db.execute(
                f"UPDATE fleet_phases SET {sets} WHERE deployment_id = :id AND phase = :phase",
                {"id": dep_id, "phase": phase, **deltas},
            )

    def record(self, device_id: str, feedback: Feedback) -> bool:
        """Store a device's report of one of its actions; answers whether the deployment changed."""
        ref = parse_action(feedback.action_id)
        row = self.db.execute(
            "SELECT t.device_id, t.phase, t.state, t.by_device, t.rb_state, d.state, d.app, d.version"
            " FROM fleet_targets t JOIN fleet_deployments d ON d.id = t.deployment_id"
            " WHERE t.deployment_id = :dep AND t.seq = :seq",
            {"dep": ref.deployment, "seq": ref.seq},
        ).fetchone()
        if row is None or row[0] != device_id or (ref.rollback and row[4] is None):
            raise NotFound(f"No action '{feedback.action_id}' for this device")
        _, phase, state, by_device, rb_state, dep_state, app, version = row
        new = feedback.state.value
        old = rb_state if ref.rollback else state
        if old in TERMINAL and (by_device or ref.rollback):
            if new == old:
                return False  # the same report again
            raise Conflict(f"Action '{feedback.action_id}' already ended {old}; it cannot become {new}")
        params = {
            "dep": ref.deployment,
            "seq": ref.seq,
            "state": new,
            "step": None if feedback.step is None else feedback.step.value,
            "message": feedback.message,
            "at": now_ms(),
        }
        if ref.rollback:
            self.db.execute(
                "UPDATE fleet_targets SET rb_state = :state, rb_step = :step, rb_message = :message, rb_updated = :at"
                " WHERE deployment_id = :dep AND seq = :seq",
                params,
            )
        else:
            self.db.execute(
                "UPDATE fleet_targets SET state = :state, by_device = 1, step = :step, message = :message,"
                " version = :version, rolled_back = :rolled_back, bytes_done = :done, bytes_total = :total,"
                " updated = :at, reports = reports + 1, previous = CASE WHEN by_device = 1 THEN previous ELSE"
                " COALESCE((SELECT a.version FROM fleet_device_apps a WHERE a.device_id = :device AND a.app = :app"
                " AND a.version <> :target), previous) END WHERE deployment_id = :dep AND seq = :seq",
                params
                | {
                    "version": feedback.version,
                    "rolled_back": int(feedback.rolled_back),
                    "done": feedback.bytes_done,
                    "total": feedback.bytes_total,
                    "device": device_id,
                    "app": app,
                    "target": version,
                },
            )
            self.count(ref.deployment, phase, old, new)
            if dep_state == ROLLED_BACK and new == FeedbackState.SUCCEEDED.value:  # installed after all: back it goes
                self.db.execute(
                    "UPDATE fleet_targets SET rb_state = :pending, rb_updated = :at"
                    " WHERE deployment_id = :dep AND seq = :seq AND rb_state IS NULL",
                    params | {"pending": PENDING},
                )
        if new != old or not by_device:
            self._history(ref, feedback)
        return self.settle(ref.deployment, dep_state)

    def _history(self, ref: ActionRef, feedback: Feedback) -> None:
        kind = "rollback" if ref.rollback else "install"
        n = self.db.scalar(
            "SELECT coalesce(max(n), 0) FROM fleet_feedback WHERE deployment_id = :dep AND seq = :seq AND kind = :kind",
            {"dep": ref.deployment, "seq": ref.seq, "kind": kind},
        )
        key = {"dep": ref.deployment, "seq": ref.seq, "kind": kind}
        self.db.execute(
            "INSERT INTO fleet_feedback (deployment_id, seq, kind, n, received, body)"
            " VALUES (:dep, :seq, :kind, :n, :at, :body)",
            key | {"n": n + 1, "at": now_ms(), "body": json.dumps(feedback.to_json(), sort_keys=True)},
        )
        self.db.execute(
            "DELETE FROM fleet_feedback WHERE deployment_id = :dep AND seq = :seq AND kind = :kind AND n <= :old",
            key | {"old": n + 1 - HISTORY},
        )

    def reject(self, dep_id: int, seq: int, message: str) -> bool:
        """The control plane's decision that a device does not take the install (a downgrade
        the deployment does not allow); answers whether the deployment changed."""
        row = self.db.execute(
            "SELECT t.phase, t.state, d.state FROM fleet_targets t JOIN fleet_deployments d ON d.id = t.deployment_id"
            " WHERE t.deployment_id = :dep AND t.seq = :seq",
            {"dep": dep_id, "seq": seq},
        ).fetchone()
        if row is None or row[1] != PENDING:
            return False
        phase, _, dep_state = row
        rejected = FeedbackState.REJECTED.value
        self.db.execute(
            "UPDATE fleet_targets SET state = :state, message = :message, updated = :at"
            " WHERE deployment_id = :dep AND seq = :seq",
            {"dep": dep_id, "seq": seq, "state": rejected, "message": message, "at": now_ms()},
        )
        self.count(dep_id, phase, PENDING, rejected)
        return self.settle(dep_id, dep_state)
