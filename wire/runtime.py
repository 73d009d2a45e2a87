"""The runtime report: which processes a device runs, and whether its installed files still
match their signed manifests. Pure: the agent and the control plane both import it.

- ``POST RUNTIME``: ``RuntimeReport`` -> ``RuntimeAnswer``. A report says what changed since
  the report the control plane last acknowledged (``base``): processes that started
  (``started``) and stopped (``stopped``, by ``(pid, started)``). A report with ``base`` 0
  is full: it replaces what the control plane knew. When ``base`` is not what the control
  plane acknowledged last (it lost a report, or the device restarted), it stores nothing and
  answers ``full``: the device sends everything next time.
- ``drift`` (when not None) is the whole drift state of the device's installed apps: one
  ``AppDrift`` per app whose current version was checked, clean apps with empty lists.
- The check-in answer carries ``RuntimeSettings`` for the device's group (``wire.fleet.CheckIn``).

Limits keep a report bounded on both sides: ``MAX_PROCESSES`` per report, command lines cut to
``MAX_CMDLINE`` characters, and the encoded report at most ``MAX_REPORT_BYTES`` (a device cuts
processes off the end, and says ``truncated``, rather than send more).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidInput
from .fleet import DEVICE_API, FLEET_API, _bool, _fail, _int, _list, _object, _optional_text, _text, check_name
from .jsonstrict import loads

RUNTIME = f"{DEVICE_API}/runtime"
RUNTIME_API = f"{FLEET_API}/runtime"  # the operators' queries of what runs
# the kinds of runtime event: an executable no bundle shipped, an installed app's files changed
UNKNOWN_EXECUTABLE = "unknown_executable"
DRIFT = "drift"
EVENT_KINDS = (UNKNOWN_EXECUTABLE, DRIFT)

MAX_PROCESSES = 2000  # processes in one report (started or stopped, each)
MAX_CMDLINE = 1024  # characters of a command line kept; the rest is cut
MAX_PATH = 1024  # characters of an executable's or a script's path
MAX_REPORT_BYTES = 4 << 20  # the encoded report
MAX_DRIFT_APPS = 256
MAX_DRIFT_FILES = 1000  # names per list (modified, missing, extra) of one app
MAX_EXCLUDE = 64  # exclude patterns of a group
MIN_INTERVAL = 1
MAX_INTERVAL = 24 * 3600
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _sha256(value: object, where: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not SHA256_RE.fullmatch(value):
        _fail(where, "must be 64 lower-case hex digits")
    return value


def cut_cmdline(text: str) -> str:
    """A command line as a report keeps it: control characters as spaces, at most ``MAX_CMDLINE``."""
    clean = "".join(" " if ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return clean[:MAX_CMDLINE]


@dataclass(frozen=True)
class Process:
    """One running process; ``(pid, started)`` names it (a pid is reused, a start time is not)."""

    pid: int
    started: int  # ms since the epoch
    exe: str  # the executable's path
    sha256: str | None  # of the executable's bytes; None when it could not be read
    user: str = ""
    script: str | None = None  # the file a known interpreter runs (python app.py, sh start.sh, java -jar x.jar)
    script_sha256: str | None = None
    container: str | None = None  # the container id from the process's cgroup
    cmdline: str | None = None  # cut to MAX_CMDLINE; None when the group drops command lines

    FIELDS = frozenset({"pid", "started", "exe", "sha256", "user", "script", "script_sha256", "container", "cmdline"})

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.started

    @property
    def ident(self) -> str | None:
        """The sha256 that says what this process is: its script's when it runs one, else its executable's."""
        return self.script_sha256 or self.sha256

    @classmethod
    def from_json(cls, obj: object, where: str = "process") -> Process:
        o = _object(obj, where, cls.FIELDS, frozenset({"pid", "started", "exe", "sha256"}), True)
        return cls(
            pid=_int(o["pid"], f"{where} pid", 0, 2**31 - 1),
            started=_int(o["started"], f"{where} started"),
            exe=_text(o["exe"], f"{where} exe", MAX_PATH),
            sha256=_sha256(o["sha256"], f"{where} sha256"),
            user=_text(o.get("user", ""), f"{where} user", 128, allow_empty=True),
            script=_optional_text(o.get("script"), f"{where} script", MAX_PATH),
            script_sha256=_sha256(o.get("script_sha256"), f"{where} script_sha256"),
            container=_optional_text(o.get("container"), f"{where} container", 128),
            cmdline=None
            if o.get("cmdline") is None
            else _text(o["cmdline"], f"{where} cmdline", MAX_CMDLINE, allow_empty=True),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(self.FIELDS)}


def _key(obj: object, where: str) -> tuple[int, int]:
    if not isinstance(obj, list) or len(obj) != 2:
        _fail(where, "must be [pid, started]")
    return _int(obj[0], f"{where} pid", 0, 2**31 - 1), _int(obj[1], f"{where} started")


def _names(value: object, where: str) -> tuple[str, ...]:
    return tuple(_text(n, where, MAX_PATH) for n in _list(value, where, MAX_DRIFT_FILES))


@dataclass(frozen=True)
class AppDrift:
    """An installed app's current version against its signed manifest, by file name inside the version."""

    app: str
    version: str
    modified: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    FIELDS = frozenset({"app", "version", "modified", "missing", "extra"})

    @classmethod
    def from_json(cls, obj: object) -> AppDrift:
        o = _object(obj, "drift", cls.FIELDS, frozenset({"app", "version"}), True)
        return cls(
            app=check_name(o["app"], "drift app"),
            version=_text(o["version"], "drift version", 128),
            modified=_names(o.get("modified", []), "drift modified"),
            missing=_names(o.get("missing", []), "drift missing"),
            extra=_names(o.get("extra", []), "drift extra"),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in self.FIELDS)}

    def findings(self) -> list[tuple[str, str]]:
        """(kind, path) of every file that differs."""
        return [(kind, path) for kind in ("modified", "missing", "extra") for path in getattr(self, kind)]


@dataclass(frozen=True)
class RuntimeReport:
    device: str  # the device's name: a report about any other device than the caller is refused
    seq: int  # this report's number, from 1, one more than ``base`` for a delta
    base: int  # the acknowledged report this one builds on; 0: a full report
    time: int  # ms since the epoch, the device's clock
    started: tuple[Process, ...] = ()
    stopped: tuple[tuple[int, int], ...] = ()
    truncated: bool = False  # the device ran more processes than a report holds
    drift: tuple[AppDrift, ...] | None = None

    FIELDS = frozenset({"device", "seq", "base", "time", "started", "stopped", "truncated", "drift"})

    @property
    def full(self) -> bool:
        return self.base == 0

    @classmethod
    def from_json(cls, obj: object) -> RuntimeReport:
        o = _object(obj, "runtime report", cls.FIELDS, frozenset({"device", "seq", "base", "time"}), True)
        seq, base = _int(o["seq"], "seq", 1), _int(o["base"], "base")
        if base >= seq:
            _fail("base", "must be lower than seq")
        started = _list(o.get("started", []), "started", MAX_PROCESSES)
        stopped = _list(o.get("stopped", []), "stopped", MAX_PROCESSES)
        if base == 0 and stopped:
            _fail("stopped", "a full report (base 0) lists no stopped process")
        drift = o.get("drift")
        report = cls(
            device=check_name(o["device"], "device"),
            seq=seq,
            base=base,
            time=_int(o["time"], "time"),
            started=tuple(Process.from_json(p, f"started[{i}]") for i, p in enumerate(started)),
            stopped=tuple(_key(k, f"stopped[{i}]") for i, k in enumerate(stopped)),
            truncated=_bool(o.get("truncated", False), "truncated"),
            drift=None
            if drift is None
            else tuple(AppDrift.from_json(d) for d in _list(drift, "drift", MAX_DRIFT_APPS)),
        )
        if len({p.key for p in report.started}) != len(report.started):
            _fail("started", "lists one process twice")
        return report

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "seq": self.seq,
            "base": self.base,
            "time": self.time,
            "started": [p.to_json() for p in self.started],
            "stopped": [list(k) for k in self.stopped],
            "truncated": self.truncated,
            "drift": None if self.drift is None else [d.to_json() for d in self.drift],
        }


def encode_report(report: RuntimeReport) -> tuple[RuntimeReport, bytes]:
    """The report as sent (compact UTF-8 JSON) and what it holds: when it would pass
    ``MAX_REPORT_BYTES``, started processes are cut off its end and it says ``truncated``."""
    data = _dumps(report.to_json())
    while len(data) > MAX_REPORT_BYTES and report.started:
        keep = max(0, len(report.started) * MAX_REPORT_BYTES // len(data) - 1)
        report = replace(report, started=report.started[:keep], truncated=True)
        data = _dumps(report.to_json())
    return report, data


def decode_report(data: bytes) -> RuntimeReport:
    if len(data) > MAX_REPORT_BYTES:
        raise InvalidInput(f"Invalid runtime report: more than {MAX_REPORT_BYTES} bytes")
    return RuntimeReport.from_json(loads(data.decode("utf-8")))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class RuntimeAnswer:
    seq: int  # the report the control plane holds now (0: none)
    full: bool = False  # the report was not stored: send a full one

    @classmethod
    def from_json(cls, obj: object) -> RuntimeAnswer:
        o = _object(obj, "runtime answer", frozenset({"seq", "full"}), frozenset({"seq"}), False)
        return cls(_int(o["seq"], "seq"), _bool(o.get("full", False), "full"))

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "full": self.full}


def check_pattern(value: object, where: str = "exclude") -> str:
    """An exclude pattern: a shell glob (``fnmatch``) over an executable's path, e.g. ``/usr/sbin/*``."""
    return _text(value, where, MAX_PATH)


@dataclass(frozen=True)
class RuntimeSettings:
    """What a device's group asks of its runtime sensor (the check-in answer carries it)."""

    enabled: bool = True
    interval: int = 60  # seconds between scans
    exclude: tuple[str, ...] = ()  # processes whose executable path matches one are not reported
    drop_cmdline: bool = False  # report no command lines at all

    FIELDS = frozenset({"enabled", "interval", "exclude", "drop_cmdline"})

    @classmethod
    def from_json(cls, obj: object, *, strict: bool = False) -> RuntimeSettings:
        o: Mapping[str, Any] = _object(obj, "runtime settings", cls.FIELDS, frozenset(), strict)
        default = cls()
        return cls(
            enabled=_bool(o.get("enabled", default.enabled), "enabled"),
            interval=_int(o.get("interval", default.interval), "interval", MIN_INTERVAL, MAX_INTERVAL),
            exclude=tuple(check_pattern(p) for p in _list(o.get("exclude", []), "exclude", MAX_EXCLUDE)),
            drop_cmdline=_bool(o.get("drop_cmdline", default.drop_cmdline), "drop_cmdline"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "interval": self.interval,
            "exclude": list(self.exclude),
            "drop_cmdline": self.drop_cmdline,
        }
