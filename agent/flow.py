"""The update flow on the device: an explicit state machine whose every step is journaled first.

INSTALL: refuse a downgrade unless allowed; download and verify (or reuse a whole kept
version); wait for the maintenance window; build the version directory and run
``pre_install``; switch ``current``; restart; health-check; on failure switch back,
restart the previous version and report FAILED with the step and its output. ROLLBACK
is the same flow to an older version, now, with the kept copy when it is whole.
CANCEL stops an action that has not begun to install. Every state change is feedback.

After a crash, ``resume`` continues from the journaled step; from a step where the new
version may be live but unchecked it rolls back, so ``current`` always names a whole,
verified version.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wire.fleet import (
    Action,
    ActionKind,
    ActionReport,
    Feedback,
    FeedbackState,
    FlowStep,
    Sources,
    clip_message,
    is_downgrade,
    sources_path,
)
from wire.manifest import Manifest, ManifestError

from .apps import AppRegistry
from .bandwidth import TokenBucket
from .bundle import BundleRefused, in_window, install_paths, verified_manifest
from .commands import Outcome, health_check, run_command
from .download import Canceled, DiskFull, Downloader, DownloadFailed
from .drift import forget_manifest, keep_manifest
from .http import Http, Refused, ServerUnavailable
from .identity import Identity
from .installer import Installer
from .journal import LIVE_STEPS, Entry, Journal, Step
from .outbox import Outbox
from .settings import AgentSettings
from .trust import DeviceTrust

log = logging.getLogger(__name__)
ORDER = list(Step)
STEP_OF = {
    Step.ACCEPTED: FlowStep.DOWNLOAD,
    Step.DOWNLOADING: FlowStep.DOWNLOAD,
    Step.VERIFIED: FlowStep.VERIFY,
    Step.SCHEDULED: FlowStep.VERIFY,
    Step.SWITCHED: FlowStep.RESTART,
    Step.RESTARTING: FlowStep.RESTART,
    Step.CHECKING: FlowStep.HEALTH_CHECK,
    Step.ROLLING_BACK: FlowStep.ROLLBACK,
}


class Later(Exception):
    """The control plane cannot be reached now: the action stays journaled and resumes at a later check-in."""


class Failure(Exception):
    """A step failed; the flow reports it (and rolls back when the new version was switched in)."""

    def __init__(self, step: FlowStep, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


@dataclass(frozen=True)
class Context:
    settings: AgentSettings
    identity: Identity
    http: Http
    trust: DeviceTrust
    outbox: Outbox
    journal: Journal
    apps: AppRegistry
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


class Flow:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.report_state: ActionReport | None = None
        self._canceled: set[str] = set()
        self._lock = threading.Lock()

    # -- feedback -------------------------------------------------------------------------
    def report(self, entry: Entry, state: FeedbackState, **fields: object) -> None:
        """Queue the report durably, then try to send it now; the run loop sends what stays queued."""
        self.ctx.outbox.put(Feedback(entry.action.action_id, state, **fields))  # type: ignore[arg-type]
        self.report_state = ActionReport(entry.action.action_id, state)
        try:
            self.ctx.outbox.flush(self.ctx.http, self.ctx.identity)
        except (ServerUnavailable, Refused) as exc:
            log.info("feedback stays queued: %s", exc)

    def _finish(self, entry: Entry, state: FeedbackState, **fields: object) -> None:
        """The outcome is journaled before anyone hears of it: a crash in between must not
        leave a device that told the control plane "succeeded" redo the step (and perhaps
        report "failed" after it). A crash after the journal, before the report was queued,
        is repaired at the next start (``report_outcome``)."""
        entry.outcome = {"state": state.value, **{k: getattr(v, "value", v) for k, v in fields.items()}}
        self.ctx.journal.save(entry, Step.DONE)
        self.report(entry, state, **fields)
        shutil.rmtree(self.staging(entry.action), ignore_errors=True)
        self.report_state = None

    def report_outcome(self, entry: Entry) -> None:
        """Queue the journaled outcome of a finished action again, at start: the control
        plane answers a repeat of a final report as a success, and hears it if it never did."""
        if entry.outcome and not any(f.action_id == entry.action.action_id for f in self.ctx.outbox.pending()):
            self.ctx.outbox.put(Feedback.from_json({"action_id": entry.action.action_id, **entry.outcome}))

    def staging(self, action: Action) -> Path:
        return staging_dir(self.ctx.settings.data_dir, action.action_id)

    # -- entry points ---------------------------------------------------------------------
    def cancel(self, action_id: str) -> bool:
        """Cancel ``action_id`` if it has not begun to install; answers whether it was (or never started)."""
        entry = self.ctx.journal.load()
        if entry is not None and entry.action.action_id == action_id and entry.step != Step.DONE:
            if ORDER.index(entry.step) > ORDER.index(Step.SCHEDULED):
                log.info("cancel of %s refused: it has begun to install", action_id)
                return False
            with self._lock:
                self._canceled.add(action_id)
            return True
        return False

    def start(self, action: Action) -> None:
        """Run a new INSTALL or ROLLBACK action as far as it goes now."""
        installer = Installer(action.app)
        running = installer.current_version()
        entry = Entry(action, Step.ACCEPTED, previous=running)
        downgrade = action.version is not None and is_downgrade(running, action.version)
        if action.kind == ActionKind.INSTALL and downgrade and not action.allow_downgrade:
            message = f"{action.version} is older than the running {running}; the deployment does not allow a downgrade"
            return self._finish(entry, FeedbackState.REJECTED, message=message, version=running)
        self.ctx.journal.save(entry, Step.ACCEPTED)
        self.advance(entry)

    def resume(self, entry: Entry, *, after_crash: bool) -> None:
        """Continue a journaled action: after a crash, or when its window may have opened or
        the control plane answers again. One cut short once the new version was switched in
        (a crash, or an error that stopped the worker) is rolled back."""
        if after_crash:
            log.warning("action %s was interrupted at step %s", entry.action.action_id, entry.step.value)
        if entry.step in LIVE_STEPS:
            step = FlowStep(entry.outcome.get("step", STEP_OF[entry.step]))
            reason = entry.outcome.get("message") or f"the agent was interrupted during {entry.step.value}"
            return self._roll_back(entry, Failure(step, str(reason)))
        if after_crash:
            state = FeedbackState.INSTALLING
            if ORDER.index(entry.step) <= ORDER.index(Step.DOWNLOADING):
                state = FeedbackState.DOWNLOADING
            elif entry.step in (Step.VERIFIED, Step.SCHEDULED):
                state = FeedbackState.DOWNLOADED
            message = f"resumed after the agent was interrupted at step {entry.step.value}"
            self.report(entry, state, message=message, version=entry.previous)
        self.advance(entry)

    # -- the machine ----------------------------------------------------------------------
    def advance(self, entry: Entry) -> None:
        try:
            self._advance(entry)
        except Canceled:
            self._finish(entry, FeedbackState.CANCELED, message="canceled before the install began")
        except Later as exc:
            log.warning("action %s waits: %s", entry.action.action_id, exc)
        except Failure as failure:
            self._fail(entry, failure)
        except Exception as exc:  # a bug or the device itself (I/O, gpg): still a clear report
            log.exception("action %s failed at %s", entry.action.action_id, entry.step.value)
            self._fail(entry, Failure(STEP_OF.get(entry.step, FlowStep.INSTALL), f"unexpected error: {exc!r}"))

    def _fail(self, entry: Entry, failure: Failure) -> None:
        if entry.step in LIVE_STEPS:
            self._roll_back(entry, failure)
        else:
            self._fail_before_switch(entry, failure)

    def _advance(self, entry: Entry) -> None:
        action, journal = entry.action, self.ctx.journal
        installer = Installer(action.app)
        if action.kind == ActionKind.ROLLBACK and action.version is None:
            installer.switch(None)
            self.ctx.apps.record(action.app.name, action.app.install_dir, entry.previous)
            return self._finish(entry, FeedbackState.SUCCEEDED, message="the app was removed", version=None)
        version = str(action.version)
        at = ORDER.index(entry.step)
        if at <= ORDER.index(Step.DOWNLOADING):
            files = self._download(entry, installer)
            journal.save(entry, Step.VERIFIED)
            self.report(entry, FeedbackState.DOWNLOADED, version=entry.previous)
        elif at <= ORDER.index(Step.UNPACKING):
            files = self._staged_files(entry, installer)
        if at <= ORDER.index(Step.SCHEDULED):
            self._check_canceled(action)
            if action.kind == ActionKind.INSTALL and not self._window_open(entry):
                return
        if at <= ORDER.index(Step.UNPACKING):
            self._check_canceled(action)
            journal.save(entry, Step.UNPACKING)
            self.report(entry, FeedbackState.INSTALLING, version=entry.previous)
            self._unpack(entry, installer, files)
            journal.save(entry, Step.UNPACKED)
        if at <= ORDER.index(Step.UNPACKED):
            installer.switch(version)
            journal.save(entry, Step.SWITCHED)
        if at <= ORDER.index(Step.RESTARTING):
            journal.save(entry, Step.RESTARTING)
            self.report(entry, FeedbackState.RESTARTING, version=version)
            self._run_hook(action.app.restart, installer.current, FlowStep.RESTART, version)
        journal.save(entry, Step.CHECKING)
        self.report(entry, FeedbackState.CHECKING, version=version)
        self._check_health(action, installer, version)
        self.ctx.apps.record(action.app.name, action.app.install_dir, entry.previous)
        removed = installer.prune(action.app.keep, entry.previous)
        for gone in removed:
            forget_manifest(self.ctx.settings.data_dir, action.app.name, gone)
        if removed:
            log.info("%s: removed old versions %s", action.app.name, ", ".join(removed))
        self._finish(entry, FeedbackState.SUCCEEDED, version=version)

    def _check_canceled(self, action: Action) -> None:
        with self._lock:
            if action.action_id in self._canceled:
                raise Canceled()

    def _window_open(self, entry: Entry) -> bool:
        try:
            if in_window(entry.action.window, self.ctx.clock()):
                return True
        except BundleRefused as exc:
            raise Failure(FlowStep.INSTALL, str(exc)) from None
        if entry.step != Step.SCHEDULED:
            self.ctx.journal.save(entry, Step.SCHEDULED)
            window = entry.action.window
            assert window is not None
            message = f"waiting for the maintenance window {window.start}-{window.end} {window.timezone}"
            self.report(entry, FeedbackState.SCHEDULED, message=message, version=entry.previous)
        return False

    # -- download and verify --------------------------------------------------------------
    def _sources(self, action: Action) -> Sources:
        identity = self.ctx.identity
        try:
            return Sources.from_json(
                self.ctx.http.call("GET", identity.url(sources_path(action.action_id)), None, identity.headers)
            )
        except ServerUnavailable as exc:
            raise Later(f"no sources for now: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - every other way of not getting sources fails the download
            raise Failure(FlowStep.DOWNLOAD, f"no sources for {action.app.bundle} {action.version}: {exc}") from None

    def _download(self, entry: Entry, installer: Installer) -> dict[str, Path]:
        action, staging = entry.action, self.staging(entry.action)
        self.ctx.journal.save(entry, Step.DOWNLOADING)
        if installer.is_whole(str(action.version)):
            return {}  # a kept version, verified when it was installed
        sources = self._sources(action)
        manifest = self._verify(entry, sources.manifest, sources.signature)
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        (staging / "manifest.json").write_text(sources.manifest, "utf-8")
        (staging / "manifest.asc").write_text(sources.signature, "utf-8")
        self.report(entry, FeedbackState.DOWNLOADING, version=entry.previous, bytes_total=manifest.total_size)
        settings = self.ctx.settings
        downloader = Downloader(
            self.ctx.http,
            staging,
            lambda: self._sources(action),
            bucket=TokenBucket(settings.bandwidth_limit) if settings.bandwidth_limit else None,
            canceled=lambda: action.action_id in self._canceled,
            on_refused=lambda message: self.report(
                entry, FeedbackState.DOWNLOADING, step=FlowStep.DOWNLOAD, message=message
            ),
            probe_timeout=settings.probe_timeout,
            probe_workers=settings.probe_workers,
            checkpoint=self.ctx.journal.checkpoint,
        )
        try:
            staged = downloader.fetch_all(sources, manifest.artifacts)
        except DownloadFailed as exc:
            if isinstance(exc, DiskFull):
                shutil.rmtree(staging, ignore_errors=True)
            raise Failure(FlowStep.DOWNLOAD, str(exc)) from None
        paths = install_paths(manifest)
        return {paths[target]: path for target, path in staged.items()}

    def _verify(self, entry: Entry, manifest: str, signature: str) -> Manifest:
        try:
            return verified_manifest(self.ctx.trust, manifest, signature, entry.action)
        except (BundleRefused, ManifestError) as exc:
            raise Failure(FlowStep.VERIFY, str(exc)) from None

    def _staged_files(self, entry: Entry, installer: Installer) -> dict[str, Path]:
        """The files a journaled action already verified, checked again against the saved signed manifest."""
        if installer.is_whole(str(entry.action.version)):
            return {}
        staging = self.staging(entry.action)
        try:
            text, signature = (
                (staging / "manifest.json").read_text("utf-8"),
                (staging / "manifest.asc").read_text("utf-8"),
            )
        except OSError as exc:
            raise Failure(FlowStep.VERIFY, f"the staged download is gone ({exc})") from None
        manifest = self._verify(entry, text, signature)
        paths = install_paths(manifest)
        files = {paths[a.target]: staging / a.sha256 for a in manifest.artifacts}
        if missing := [rel for rel, path in files.items() if not path.is_file()]:
            raise Failure(FlowStep.VERIFY, f"staged files missing: {', '.join(missing)}")
        return files

    # -- install --------------------------------------------------------------------------
    def _unpack(self, entry: Entry, installer: Installer, files: dict[str, Path]) -> None:
        version = str(entry.action.version)
        try:
            directory = installer.build(version, files)
        except OSError as exc:
            installer.discard(version)
            raise Failure(FlowStep.INSTALL, f"could not build {installer.version_dir(version)}: {exc}") from None
        kept = self.staging(entry.action) / "manifest.json"
        if kept.is_file():  # verified before it was staged; drift checks compare against it
            keep_manifest(self.ctx.settings.data_dir, entry.action.app.name, version, kept.read_text("utf-8"))
        self.ctx.journal.checkpoint("built")
        try:
            self._run_hook(entry.action.app.pre_install, directory, FlowStep.PRE_INSTALL, version)
        except Failure:
            if entry.previous != version:
                installer.discard(version)
            raise

    def _run_hook(self, command: str | None, cwd: Path, step: FlowStep, version: str) -> None:
        if command is None:
            return
        outcome = run_command(command, cwd, self.ctx.settings.hook_timeout, _hook_env(cwd, version))
        if not outcome.ok:
            raise Failure(step, outcome.output)

    def _check_health(self, action: Action, installer: Installer, version: str) -> None:
        if action.app.health is None:
            return
        outcome: Outcome = health_check(action.app.health, installer.current, _hook_env(installer.current, version))
        if not outcome.ok:
            raise Failure(FlowStep.HEALTH_CHECK, outcome.output)

    # -- failures -------------------------------------------------------------------------
    def _fail_before_switch(self, entry: Entry, failure: Failure) -> None:
        """``current`` was never switched: the running version runs on untouched."""
        self._finish(entry, FeedbackState.FAILED, step=failure.step, message=failure.message, version=entry.previous)

    def _roll_back(self, entry: Entry, failure: Failure) -> None:
        action, installer = entry.action, Installer(entry.action.app)
        entry.outcome = {"step": failure.step.value, "message": failure.message}
        self.ctx.journal.save(entry, Step.ROLLING_BACK)
        installer.switch(entry.previous)
        message = failure.message
        if entry.previous is not None:
            try:
                self._run_hook(action.app.restart, installer.current, FlowStep.RESTART, entry.previous)
                self._check_health(action, installer, entry.previous)
            except Failure as again:
                again_step = again.step.value
                message = (
                    f"{message}\nafter the rollback, {entry.previous} failed its {again_step} too:\n{again.message}"
                )
        if action.version not in (None, entry.previous):
            installer.discard(str(action.version))
            forget_manifest(self.ctx.settings.data_dir, action.app.name, str(action.version))
        self.ctx.apps.record(action.app.name, action.app.install_dir, None)
        self._finish(
            entry,
            FeedbackState.FAILED,
            step=failure.step,
            message=clip_message(message),
            rolled_back=True,
            version=entry.previous,
        )


def staging_dir(data_dir: Path, action_id: str) -> Path:
    """An action's download area; the prefix keeps an id such as ``..`` inside ``staging/``."""
    return data_dir / "staging" / f"action-{action_id}"


def _hook_env(directory: Path, version: str) -> dict[str, str]:
    return {"NODE_AGENT_APP_DIR": str(directory), "NODE_AGENT_APP_VERSION": version}
