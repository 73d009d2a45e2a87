"""Devices' feedback, recorded in group commits (``group_commit.py``).

A rollout to 1,000 devices brings six reports from each (downloading to succeeded) within
seconds; one transaction a report made them wait for the disk one after another. Now the
reports that arrive while one transaction commits are recorded together in the next, each
in a savepoint of its own: a refused report (another device's action, a state after a
terminal one) is answered its own 404 or 409 and changes nothing, while the others commit.
A report is answered only once the transaction holding it committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from distribution.webhook_events import Publisher
from wire.errors import WireError
from wire.fleet import Feedback

from .group_commit import GroupCommit
from .rollout_feedback import Deployments


@dataclass(frozen=True)
class Report:
    device_id: str
    feedback: Feedback


class FeedbackWriter(GroupCommit[Report, bool]):
    """``record`` answers whether the report changed its deployment (a phase, its state)."""

    what = "feedback reports"
    # the service's webhook events (``distribution.keys.publish_key``), set by the fleet's setup
    publish: Publisher | None = None

    async def record(self, device_id: str, feedback: Feedback) -> bool:
        return await self.submit(Report(device_id, feedback))

    def store(self, items: list[Report]) -> list[bool | Exception]:
        db = self._database.db
        outcomes: list[bool | Exception] = []
        with db.atomic():
            machine = Deployments(db, self.publish)
            for report in items:
                try:
                    with db.atomic():  # a savepoint: a refusal undoes this report only
                        outcomes.append(machine.record(report.device_id, report.feedback))
                except WireError as exc:  # refusals carry their status
                    outcomes.append(exc)
        return outcomes
