"""The runtime sensor's own thread: scan at the group's interval, send what changed.

The group's ``RuntimeSettings`` come with every check-in answer (``configure``); until one
says the sensor is on, it does nothing. The first report after start is full; after that a
report holds only what changed since the report the control plane acknowledged, and none
is sent when nothing changed. When the control plane answers ``full`` (it lost track), the
next report is full again. A control plane that is down costs nothing but a retry: the
delta is computed against what was acknowledged, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

from wire.errors import InvalidInput
from wire.runtime import RUNTIME, AppDrift, Process, RuntimeAnswer, RuntimeReport, RuntimeSettings, encode_report

from .drift import DriftChecker
from .http import CredentialRevoked, Http, Refused, ServerUnavailable
from .identity import Identity
from .runtime import HashCache, ProcInfo, Scanner, live_processes
from .settings import AgentSettings

log = logging.getLogger(__name__)
IDLE_WAIT = 5.0  # seconds between looks at the settings while the sensor is off


class Sensor:
    def __init__(
        self,
        settings: AgentSettings,
        identity: Identity,
        http: Http,
        stop: threading.Event,
        table: Callable[[], Iterable[ProcInfo]] = live_processes,
    ) -> None:
        self.identity, self.http, self.stop, self.table = identity, http, stop, table
        self.scanner = Scanner(HashCache(settings.runtime_hash_cache))
        self.drift = DriftChecker(settings.data_dir, settings.drift_rate)
        self.drift_interval = settings.drift_interval
        self.config: RuntimeSettings | None = None
        self.acked: dict[tuple[int, int], Process] = {}
        self.acked_drift: tuple[AppDrift, ...] | None = None
        self.drift_found: tuple[AppDrift, ...] | None = None  # the last check's, sent until acknowledged
        self.seq = 0
        self.need_full = True
        self.next_drift = 0.0
        self._wake = threading.Event()

    def configure(self, runtime: RuntimeSettings | None) -> None:
        """The group's settings from a check-in; a change of what is reported makes the next report full."""
        old, self.config = self.config, runtime
        if runtime == old:
            return
        if old is not None and runtime is not None and _reported(old) != _reported(runtime):
            self.need_full = True
        self._wake.set()

    def run(self) -> None:
        while not self.stop.is_set():
            config = self.config
            wait = IDLE_WAIT if config is None or not config.enabled else float(config.interval)
            if config is not None and config.enabled:
                try:
                    self.report_once(config)
                except CredentialRevoked:
                    return  # the check-in loop says so and stops the agent
                except (ServerUnavailable, Refused, InvalidInput) as exc:
                    log.warning("runtime report not taken (%s): trying again in %.0f s", exc, wait)
                except Exception:  # a bug must not stop the sensor for good
                    log.exception("runtime scan failed")
            self._wake.wait(wait)
            self._wake.clear()

    def report_once(self, config: RuntimeSettings) -> RuntimeReport | None:
        """Scan, send what changed; answers the report sent (None: nothing had changed)."""
        current, truncated = self.scanner.scan(self.table(), config)
        if self._drift_due():
            self.drift_found = self.drift.check()
        now = int(time.time() * 1000)
        if self.need_full:
            report = RuntimeReport(
                self.identity.name,
                self.seq + 1,
                0,
                now,
                tuple(current.values()),
                truncated=truncated,
                drift=self.drift_found,
            )
        else:
            drift = self.drift_found if self.drift_found != self.acked_drift else None  # not yet acknowledged
            started = tuple(p for k, p in current.items() if self.acked.get(k) != p)
            stopped = tuple(k for k in self.acked if k not in current)
            if not started and not stopped and drift is None:
                return None
            report = RuntimeReport(self.identity.name, self.seq + 1, self.seq, now, started, stopped, truncated, drift)
        report, data = encode_report(report)
        self._send(report, data)
        return report

    def _drift_due(self) -> bool:
        if time.monotonic() < self.next_drift:
            return False
        self.next_drift = time.monotonic() + self.drift_interval
        return True

    def _send(self, report: RuntimeReport, data: bytes) -> None:
        headers = {**self.identity.headers, "Content-Type": "application/json", "Accept": "application/json"}
        with self.http.open("POST", self.identity.url(RUNTIME), headers, data) as resp:
            answer = RuntimeAnswer.from_json(json.loads(resp.read(1 << 16)))
        if answer.full:
            log.info("the control plane asks for a full runtime report")
            self.need_full = True
            return
        if report.full:
            self.acked = {p.key: p for p in report.started}
        else:
            for key in report.stopped:
                self.acked.pop(key, None)
            self.acked.update((p.key, p) for p in report.started)
        if report.drift is not None:
            self.acked_drift = report.drift
        self.seq, self.need_full = answer.seq, False


def _reported(settings: RuntimeSettings) -> tuple[tuple[str, ...], bool]:
    """What of a process a report holds under these settings."""
    return settings.exclude, settings.drop_cmdline
