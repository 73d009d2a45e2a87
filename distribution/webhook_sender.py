"""The deliverer: a background task, apart from the job runner, that posts queued webhook deliveries.

It claims subscriptions whose next delivery is due (a lease each, as jobs are claimed), and
for each one sends its deliveries in order, one at a time, until the queue is empty or the
head must wait for a retry. At most ``webhook_max_parallel`` subscriptions are served at once,
each request bounded by ``webhook_timeout``: a receiver that hangs holds one slot and delays
only its own subscription, and a distribution never waits for any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time

import aiohttp

from repository.catalog import now_ms

from .settings import DistributionSettings
from .webhook_events import DELIVERED, FAILED, PENDING
from .webhook_signing import EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from .webhook_store import Due, Outcome, WebhookStore

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# bytes of a receiver's answer read (for the delivery log's error text); the rest is not read
MAX_ANSWER = 1024
# the lease outlives one attempt by this much (s): renewed before each attempt
LEASE_MARGIN = 30.0
# seconds between prunes of the delivery log (``webhook_log_days``)
PRUNE_SECONDS = 600.0
DAY_MS = 86_400_000


def outcome_of(status: int | None, error: str, attempts: int, settings: DistributionSettings) -> Outcome:
    """What an attempt (the ``attempts``-th, counting this one) that got ``status`` (None: no
    answer) leads to: a 2xx delivers; 410 Gone gives up and disables the subscription (the
    receiver says it is gone for good); anything else is retried after a wait that doubles from
    ``webhook_retry_base`` up to ``webhook_retry_max``, until ``webhook_max_attempts``."""
    if status is not None and 200 <= status < 300:
        return Outcome(DELIVERED, status, "")
    if status == 410:
        return Outcome(FAILED, status, "the receiver answered 410 Gone: subscription disabled", disable=True)
    if attempts >= settings.webhook_max_attempts:
        return Outcome(FAILED, status, f"{error} (gave up after {attempts} attempts)")
    delay = min(settings.webhook_retry_max, settings.webhook_retry_base * 2 ** min(attempts - 1, 30))
    delay *= random.uniform(0.8, 1.0)
    return Outcome(PENDING, status, error, next_attempt=now_ms() + int(delay * 1000))


class WebhookDeliverer:
    def __init__(self, store: WebhookStore, session: aiohttp.ClientSession, settings: DistributionSettings) -> None:
        self.store, self.session, self.settings = store, session, settings
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    @property
    def _lease_ms(self) -> int:
        return int((self.settings.webhook_timeout + LEASE_MARGIN) * 1000)

    def wake(self) -> None:
        """Look for due deliveries now (a redelivery was asked for, a subscription enabled)."""
        self._wake.set()

    async def run(self) -> None:
        """The loop; cancelled on shutdown. Deliveries left by a stop or a crash are in the
        database and are sent from where they were."""
        await self.store.release_all()
        pruned = 0.0
        while True:
            try:
                await self._schedule()
                if time.monotonic() - pruned >= PRUNE_SECONDS:
                    pruned = time.monotonic()
                    await self.store.prune(now_ms() - self.settings.webhook_log_days * DAY_MS)
            except Exception:
                log.exception("webhooks: cannot look for due deliveries or prune the log")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def _schedule(self) -> None:
        free = self.settings.webhook_max_parallel - len(self._tasks)
        if free <= 0:
            return
        for sub_id in await self.store.claim(set(self._tasks), free, self._lease_ms):
            task = asyncio.create_task(self._serve(sub_id), name=f"webhook subscription {sub_id}")
            self._tasks[sub_id] = task
            task.add_done_callback(functools.partial(self._served, sub_id))

    def _served(self, sub_id: int, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(sub_id, None)
        self.wake()

    async def _serve(self, sub_id: int) -> None:
        """Send a subscription's deliveries in order while they are due and its lease is held."""
        try:
            while True:
                due = await self.store.head(sub_id)
                if due is None or due.next_attempt > now_ms():
                    break
                if not await self.store.renew(sub_id, self._lease_ms):
                    return  # another replica took it over
                status, error = await self._post(due)
                outcome = outcome_of(status, error, due.attempts + 1, self.settings)
                if outcome.state != DELIVERED:
                    log.info("webhook %s to %s: %s", due.event_type, due.url, outcome.error or status)
                if not await self.store.record(due, outcome):
                    return
        except Exception:
            log.exception("webhooks: delivering to subscription %s", sub_id)
        await asyncio.shield(self.store.release(sub_id))

    async def _post(self, due: Due) -> tuple[int | None, str]:
        """One attempt: the receiver's status (None when it did not answer) and what went wrong."""
        body = due.body.encode()
        sent_at = int(time.time())
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: due.event_id,
            TIMESTAMP_HEADER: str(sent_at),
            SIGNATURE_HEADER: signature(due.secret, sent_at, body),
            EVENT_HEADER: due.event_type,
            "User-Agent": "distribution-webhooks/1",
        }
        try:
            async with self.session.post(due.url, data=body, headers=headers, allow_redirects=False) as resp:
                answer = (await resp.content.read(MAX_ANSWER)).decode("utf-8", "replace")
                if 200 <= resp.status < 300:
                    return resp.status, ""
                return resp.status, f"the receiver answered {resp.status}: {answer.strip()[:200]}"
        except TimeoutError:
            return None, f"no answer within {self.settings.webhook_timeout} s"
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL the client cannot use
            return None, f"cannot reach {due.url}: {exc or type(exc).__name__}"

    async def close(self) -> None:
        """Stop where it is: a delivery cut off is sent again by whoever holds the lease next."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.release_all()


def client_session(settings: DistributionSettings) -> aiohttp.ClientSession:
    """The deliverer's own connections, apart from the edges': a receiver never takes an edge's."""
    connector = aiohttp.TCPConnector(limit=settings.webhook_max_parallel, limit_per_host=settings.webhook_max_parallel)
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout, sock_connect=min(5.0, settings.webhook_timeout))
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
