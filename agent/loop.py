"""``node-agent run``: check in at the server's interval (with jitter), act, and keep going.

One thread polls; actions run in one worker thread, so heartbeats continue during a
long download. A control plane that is down or answers 5xx changes nothing on the
device: the agent retries with exponential backoff and jitter, capped at
``max_backoff``. A 401 means the credential was revoked: one clear log line, exit 3.
The agent opens no listening socket: every call is its own, outbound.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from wire.errors import InvalidInput
from wire.fleet import (
    CHECK_IN,
    KEYS,
    TERMINAL_STATES,
    Action,
    ActionKind,
    CheckIn,
    Feedback,
    FeedbackState,
    SigningKeys,
)

from .apps import AppRegistry
from .flow import Context, Flow
from .http import CredentialRevoked, Http, Refused, ServerUnavailable
from .identity import load_identity
from .installer import placed
from .journal import Journal, Step
from .outbox import Outbox
from .sensor_loop import Sensor
from .sensors import heartbeat
from .settings import AgentSettings
from .trust import DeviceTrust, KeysRefused

log = logging.getLogger(__name__)
EXIT_REVOKED = 3
LAST_CHECK_IN = "last_check_in"


class Backoff:
    """Waits of 1, 2, 4 ... seconds up to ``cap``, each drawn from its upper half (jitter)."""

    def __init__(self, cap: float, rng: random.Random) -> None:
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, 2.0**self.failures)
        self.failures += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


def record_check_in(data_dir: Path) -> None:
    """When the control plane last answered (``node-agent status`` shows it): a device that hears
    nothing keeps running what it has, and says since when. Not fsynced: losing it costs nothing."""
    (data_dir / LAST_CHECK_IN).write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")


def last_check_in(data_dir: Path) -> str:
    try:
        return (data_dir / LAST_CHECK_IN).read_text().strip()
    except FileNotFoundError:
        return "never"


def poll_delay(interval: float, jitter: float, rng: random.Random) -> float:
    """The server's interval, give or take ``jitter`` of it, so a fleet does not call in lockstep."""
    return interval * (1 + rng.uniform(-jitter, jitter))


class Agent:
    def __init__(self, settings: AgentSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.identity = load_identity(settings.identity_path)
        self.http = Http(settings.http_timeout, settings.ca_file)
        self.trust = DeviceTrust(settings.data_dir)
        self.outbox = Outbox(settings.data_dir)
        self.journal = Journal(settings.data_dir, settings.stop_at)
        self.apps = AppRegistry(settings.data_dir)
        ctx = Context(settings, self.identity, self.http, self.trust, self.outbox, self.journal, self.apps)
        self.flow = Flow(ctx)
        self.sensor = Sensor(settings, self.identity, self.http, self.stop)
        self.poll_interval = float(self.identity.poll_interval)
        self.refused_digest = ""
        self.rng = random.Random()
        self._worker: threading.Thread | None = None

    def run(self) -> int:
        entry = self.journal.load()
        if entry is not None and entry.step != Step.DONE:
            self._start_worker(self.flow.resume, entry, after_crash=True)
        elif entry is not None:
            self.flow.report_outcome(entry)
        threading.Thread(target=self.sensor.run, name="runtime", daemon=True).start()
        backoff = Backoff(self.settings.max_backoff, self.rng)
        while not self.stop.is_set():
            try:
                self.check_in()
                backoff.reset()
                delay = poll_delay(self.poll_interval, self.settings.jitter, self.rng)
            except CredentialRevoked as exc:
                log.error(
                    "credential revoked or unknown: the control plane answered 401 (%s); the agent stops", exc.message
                )
                return EXIT_REVOKED
            except ServerUnavailable as exc:
                delay = backoff.next()
                log.warning(
                    "control plane unavailable (%s): keeping the running versions, retrying in %.1f s", exc, delay
                )
            except Refused as exc:  # a newer or misconfigured server: keep going, as when it is down
                delay = backoff.next()
                log.error("control plane refused a call (%s): retrying in %.1f s", exc, delay)
            self.stop.wait(delay)
        return 0

    def check_in(self) -> None:
        self.outbox.flush(self.http, self.identity)
        beat = heartbeat(self.settings.data_dir, self.apps.installed(), self.flow.report_state)
        raw = self.http.call("POST", self.identity.url(CHECK_IN), beat.to_json(), self.identity.headers)
        try:
            answer = CheckIn.from_json(raw)
        except InvalidInput as exc:
            raise ServerUnavailable(f"the check-in answer does not follow the protocol: {exc}") from None
        self.poll_interval = answer.poll_interval
        record_check_in(self.settings.data_dir)
        self.sensor.configure(answer.runtime)
        self._rotate_keys(answer.keys_digest)
        self._act([placed(action, self.settings.install_root) for action in answer.actions])
        self.outbox.flush(self.http, self.identity)  # what the answer decided at once (CANCELED) goes now

    def _rotate_keys(self, digest: str) -> None:
        if not digest or digest in (self.trust.digest, self.refused_digest):
            return
        try:
            keys = SigningKeys.from_json(self.http.call("GET", self.identity.url(KEYS), None, self.identity.headers))
            self.trust.rotate(keys)
        except (KeysRefused, InvalidInput) as exc:
            log.error("%s", exc)
            self.refused_digest = digest
        except CredentialRevoked:
            raise
        except Refused as exc:
            log.error("the new signing keys cannot be fetched: %s", exc)
            self.refused_digest = digest

    def _act(self, actions: Iterable[Action]) -> None:
        canceled = set()
        for action in actions:
            if action.kind == ActionKind.CANCEL:
                canceled.add(action.action_id)
                if not self.flow.cancel(action.action_id) and not self._known(action.action_id):
                    self.outbox.put(
                        Feedback(action.action_id, FeedbackState.CANCELED, message="canceled before it started")
                    )
        if self._busy():
            return
        entry = self.journal.load()
        if entry is not None and entry.step != Step.DONE:
            self._start_worker(self.flow.resume, entry, after_crash=False)
            return
        for action in actions:
            if (
                action.kind != ActionKind.CANCEL
                and action.action_id not in canceled
                and not self._known(action.action_id)
            ):
                self._start_worker(self.flow.start, action)
                return

    def _known(self, action_id: str) -> bool:
        """Whether this device already worked on ``action_id`` (journaled, or a final report still queued)."""
        entry = self.journal.load()
        if entry is not None and entry.action.action_id == action_id:
            return True
        return any(f.action_id == action_id and f.state in TERMINAL_STATES for f in self.outbox.pending())

    def _busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _start_worker(self, target: Callable[..., None], *args: object, **kwargs: object) -> None:
        self._worker = threading.Thread(target=target, args=args, kwargs=kwargs, name="action", daemon=True)
        self._worker.start()
