"""A distribution to a child edge goes through its parent (docs/tiers.md).

The parent is a target of every distribution that targets one of its children (it keeps the
bundle, as Artifactory's tiers do), and its job is an ordinary push. A child's job waits for
the parent's job to commit, then asks the parent to relay the committed transaction to the
child, handing it the child's URL and the token this service holds for the child, and reads
the relay's progress into the child's job a look at a time, without holding a runner slot
between looks. The child verifies the signed manifest and every sha256 itself, with its own
trusted keys: the parent is trusted no more than a wire.

When the parent's job failed, or the parent has not answered for ``relay_timeout`` seconds,
the service pushes to the child directly. The transaction is idempotent, so a child that got
the bundle through the parent meanwhile answers that push "already committed".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from repository.catalog import now_ms
from transfer.client import EdgeCallError, EdgeClient, EdgeGarbage, EdgeRefused
from wire import protocol
from wire.protocol import RelayState

from .edges import Edge, EdgeStore
from .jobs import COMPLETED, FAILED, IN_PROGRESS, Job, JobStore
from .settings import DistributionSettings

log = logging.getLogger(__name__)

LOOK_SECONDS = 0.5  # between looks at a relay's progress, or at the parent's job


class Waiting(EdgeCallError):
    """Nothing to do for the job now: look again in ``delay`` seconds (no failed attempt)."""

    retryable = True

    def __init__(self, message: str, delay: float = LOOK_SECONDS) -> None:
        super().__init__(message)
        self.delay = delay


def with_parents(chosen: list[Edge], registered: list[Edge]) -> list[Edge]:
    """The edges a distribution goes to: those chosen, and the parent of each chosen child."""
    names = {e.name for e in chosen}
    parents = {e.parent for e in chosen if e.parent is not None and e.parent not in names}
    return sorted([*chosen, *(e for e in registered if e.name in parents)], key=lambda e: e.name)


class Relays:
    """The service's side of relayed jobs."""

    def __init__(
        self, session: aiohttp.ClientSession, edges: EdgeStore, jobs: JobStore, settings: DistributionSettings
    ) -> None:
        self.session, self.edges, self.jobs, self.settings = session, edges, jobs, settings
        # when each child job's parent last answered (monotonic), or was first waited for
        self._heard: dict[tuple[int, str], float] = {}
        # child jobs that asked their parent for the relay (an ended one found before is not theirs)
        self._asked: set[tuple[int, str]] = set()

    def _client(self, edge: Edge) -> EdgeClient:
        return EdgeClient(self.session, edge, read_timeout=self.settings.edge_read_timeout)

    async def attempt(self, job: Job, child: Edge, direct: Callable[[], Awaitable[None]]) -> None:
        """One look at a child's job: returns once the child committed (through the parent, or
        pushed to directly), raises ``Waiting`` to look again, or fails with the child's words."""
        parent = await self.edges.get(str(child.parent))
        parent_job = await self.jobs.job((job.distribution_id, parent.name)) if parent is not None else None
        if parent is None or parent_job is None:
            return await self._direct(job, child, direct, "its parent is not registered, or not a target")
        if parent_job.state == FAILED:
            return await self._direct(job, child, direct, f"parent edge {parent.name} failed")
        if parent_job.state != COMPLETED:
            if parent.healthy is not False:
                self._heard[job.key] = time.monotonic()
            elif self._silent(job.key):
                return await self._direct(job, child, direct, f"parent edge {parent.name} has not answered")
            raise Waiting(f"waiting for parent edge {parent.name} to commit")
        try:
            relay = await self._relay(job.key, parent, str(parent_job.transaction_id), child)
        except EdgeCallError as exc:
            if not exc.retryable:
                return await self._direct(job, child, direct, f"parent edge {parent.name} refused: {exc.message}")
            if self._silent(job.key):
                return await self._direct(job, child, direct, f"parent edge {parent.name} has not answered")
            raise Waiting(f"parent edge {parent.name} does not answer ({exc.message}); still waiting") from None
        self._heard[job.key] = time.monotonic()
        await self._record(job, relay)
        state = relay["state"]
        if state != RelayState.RUNNING:
            self._forget(job.key)
        if state == RelayState.COMMITTED:
            return None
        if state in (RelayState.FAILED, RelayState.ABORTED):
            raise EdgeRefused(f"relayed by {parent.name}: {relay.get('error') or state.lower()}")
        raise Waiting(relay.get("error") or "")

    def _forget(self, key: tuple[int, str]) -> None:
        self._heard.pop(key, None)
        self._asked.discard(key)

    def _silent(self, key: tuple[int, str]) -> bool:
        """Whether the parent has not answered for ``relay_timeout`` (counted from the first look)."""
        heard = self._heard.setdefault(key, time.monotonic())
        return time.monotonic() - heard > self.settings.relay_timeout

    async def _direct(self, job: Job, child: Edge, direct: Callable[[], Awaitable[None]], why: str) -> None:
        log.info("job %s to %s: pushing directly: %s", job.distribution_id, child.name, why)
        self._forget(job.key)
        await direct()

    async def _relay(self, key: tuple[int, str], parent: Edge, tx: str, child: Edge) -> dict[str, Any]:
        """The relay of ``tx`` to ``child`` on ``parent``. Asked for when the parent has none, or
        has one that ended before this job asked (an earlier distribution's, failed or aborted)."""
        client = self._client(parent)
        body: Any = None
        try:
            _, body, _ = await client.call("GET", protocol.relay_path(tx, child.name))
        except EdgeRefused as exc:
            if exc.status != 404:
                raise
        ended = isinstance(body, dict) and body.get("state") in (RelayState.FAILED, RelayState.ABORTED)
        if body is None or (ended and key not in self._asked):
            asked = {"transaction_id": tx, "child": child.name, "url": child.url, "token": child.token}
            _, body, _ = await client.call("POST", protocol.RELAYS, json_body=asked)
            self._asked.add(key)
        if not isinstance(body, dict) or body.get("state") not in set(RelayState):
            raise EdgeGarbage(f"edge {parent.name} answered a relay without a known 'state': {str(body)[:200]}")
        return body  # type: ignore[no-any-return]

    async def _record(self, job: Job, relay: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"state": IN_PROGRESS, "transaction_id": relay.get("transaction_id")}
        for name in ("distributed_files", "distributed_bytes"):
            if isinstance(relay.get(name), int):
                fields[name] = relay[name]
        fields["general_error"] = relay.get("error") if relay.get("state") == RelayState.RUNNING else ""
        await self.jobs.update(job.key, **fields, **({"started": now_ms()} if job.started is None else {}))

    async def stop(self, job: Job) -> None:
        """Best effort: stop the parent's relay to an aborted child job (the child's own
        transaction is aborted directly, like any edge's)."""
        child = await self.edges.get(job.edge)
        parent = await self.edges.get(child.parent) if child is not None and child.parent else None
        if parent is None or not job.transaction_id:
            return
        try:
            await self._client(parent).call("POST", protocol.relay_abort_path(job.transaction_id, job.edge))
        except EdgeCallError as exc:
            log.info("relay of %s to %s on %s not stopped: %s", job.transaction_id, job.edge, parent.name, exc)
