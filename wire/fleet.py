"""The device protocol between a node agent and the fleet control plane.

Both sides import this module and nothing else of each other: the agent installs on a
device without the servers' code. It holds the URLs, the bodies each call sends and
answers (encoded by ``to_json``, decoded and checked by ``from_json``), and the states a
device reports. Devices talk outbound only: every call is the device's.

- ``POST ENROLL`` (no credential): ``EnrollRequest`` -> ``Enrollment``. The enrollment
  token buys the device a credential of its own, sent from then on in
  ``DEVICE_TOKEN_HEADER``.
- ``POST CHECK_IN``: ``Heartbeat`` -> ``CheckIn``: the device's health and what it runs,
  answered with what it should do (``Action``s) and when to call again. A heartbeat is
  a poll, so a fleet of N devices costs N calls per interval, not 2N.
- ``GET sources_path(action_id)`` -> ``Sources``: the signed manifest, the edges that
  hold the bundle (nearest first) and a short-lived signed-URL token per file.
- ``POST FEEDBACK``: ``Feedback``, one per state change of an action. The control
  plane's view of a device is these reports, never a guess.
- ``GET KEYS`` -> ``SigningKeys``: the service's public signing keys, the document
  signed by a key the device already trusts (rotation never widens trust on the
  control plane's word alone).

Requests a server reads are checked strictly (unknown fields refused); answers a device
reads ignore unknown fields, so a newer server can add some.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlencode

from .errors import InvalidInput
from .jsonstrict import loads

if TYPE_CHECKING:
    from .runtime import RuntimeSettings

FLEET_API = "/fleet/api/v1"
DEVICE_API = f"{FLEET_API}/device"
ENROLL = f"{DEVICE_API}/enroll"
CHECK_IN = f"{DEVICE_API}/check-in"
FEEDBACK = f"{DEVICE_API}/feedback"
KEYS = f"{DEVICE_API}/keys"
# A device's own credential rides in a header of its own, so no server confuses it with a
# user's or a service's token in Authorization.
DEVICE_TOKEN_HEADER = "X-Device-Token"

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
ACTION_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
WINDOW_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
MAX_TAGS = 32
MAX_TAG_VALUE = 128
MAX_TEXT = 256
MAX_MESSAGE = 4096  # a failure's output: its last bytes are what a person needs
MAX_APPS = 256
MAX_PAGE = 1000  # devices in one page of the operators' device list
MIN_POLL_SECONDS = 1
MAX_POLL_SECONDS = 24 * 3600


class FeedbackState(StrEnum):
    """What a device reports of an action, in the order a successful install passes them."""

    SCHEDULED = "scheduled"  # downloaded and verified, waiting for the maintenance window
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"  # every file verified against the signed manifest
    INSTALLING = "installing"
    RESTARTING = "restarting"
    CHECKING = "checking"  # the health check runs
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # with the step, the output, and whether the previous version runs again
    REJECTED = "rejected"  # never started: a downgrade not allowed, an app it cannot take
    CANCELED = "canceled"  # the operator canceled it before the device began to install


TERMINAL_STATES = frozenset(
    {FeedbackState.SUCCEEDED, FeedbackState.FAILED, FeedbackState.REJECTED, FeedbackState.CANCELED}
)


class FlowStep(StrEnum):
    DOWNLOAD = "download"
    VERIFY = "verify"
    PRE_INSTALL = "pre_install"
    INSTALL = "install"
    RESTART = "restart"
    HEALTH_CHECK = "health_check"
    ROLLBACK = "rollback"


class ActionKind(StrEnum):
    INSTALL = "install"  # download if needed, then install ``version``
    ROLLBACK = "rollback"  # go back to ``version`` (a kept one when it is whole; else download it)
    CANCEL = "cancel"  # stop ``action_id`` if it has not begun to install; report CANCELED


def _fail(where: str, problem: str) -> NoReturn:
    raise InvalidInput(f"Invalid {where}: {problem}")


def check_name(value: object, where: str) -> str:
    if type(value) is not str or not NAME_RE.fullmatch(value):
        _fail(where, NAME_RULE)
    return value


def _text(value: object, where: str, limit: int = MAX_TEXT, *, allow_empty: bool = False, lines: bool = False) -> str:
    """A string of bounded length without control characters (``lines``: newline, tab and
    carriage return allowed, as in armor and command output)."""
    if type(value) is not str:
        _fail(where, "must be a string")
    if (not value and not allow_empty) or len(value) > limit:
        _fail(where, f"must be {0 if allow_empty else 1} to {limit} characters")
    allowed = "\n\r\t" if lines else ""
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in allowed for ch in value):
        _fail(where, "control characters are not allowed")
    return value


def _optional_text(value: object, where: str, limit: int = MAX_TEXT) -> str | None:
    return None if value is None else _text(value, where, limit)


def _int(value: object, where: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if type(value) is not int or not low <= value <= high:
        _fail(where, f"must be an integer from {low} to {high}")
    return value


def _bool(value: object, where: str) -> bool:
    if type(value) is not bool:
        _fail(where, "must be true or false")
    return value


def _object(
    value: object, where: str, fields: frozenset[str], required: frozenset[str], strict: bool
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, "must be a JSON object")
    if strict and (unknown := set(value) - fields):
        _fail(where, f"unknown field(s) {', '.join(sorted(map(repr, unknown)))}")
    if missing := required - set(value):
        _fail(where, f"missing field(s) {', '.join(sorted(map(repr, missing)))}")
    return value


def check_tags(value: object, where: str = "tags") -> dict[str, str]:
    if not isinstance(value, Mapping):
        _fail(where, "must be an object of strings")
    if len(value) > MAX_TAGS:
        _fail(where, f"at most {MAX_TAGS} tags")
    return {check_name(k, f"{where} key"): _text(v, f"{where}[{k!r}]", MAX_TAG_VALUE) for k, v in value.items()}


def _list(value: object, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        _fail(where, "must be a list")
    if len(value) > limit:
        _fail(where, f"at most {limit} items")
    return value


@dataclass(frozen=True)
class EnrollRequest:
    token: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""

    @classmethod
    def from_json(cls, obj: object) -> EnrollRequest:
        o = _object(
            obj, "enrollment", frozenset({"token", "name", "tags", "agent_version"}), frozenset({"token", "name"}), True
        )
        return cls(
            token=_text(o["token"], "token", 1024),
            name=check_name(o["name"], "device name"),
            tags=check_tags(o.get("tags", {})),
            agent_version=_text(o.get("agent_version", ""), "agent_version", 64, allow_empty=True),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PublicKey:
    fingerprint: str
    public_key: str  # ASCII-armored

    @classmethod
    def from_json(cls, obj: object) -> PublicKey:
        o = _object(
            obj, "key", frozenset({"fingerprint", "public_key"}), frozenset({"fingerprint", "public_key"}), False
        )
        fingerprint = o["fingerprint"]
        if type(fingerprint) is not str or not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint):
            _fail("key fingerprint", "must be 40 or 64 upper-case hex digits")
        return cls(fingerprint, _armor(o["public_key"]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _armor(value: object) -> str:
    text = _text(value, "public_key", 1 << 20, lines=True)
    if not text.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"):
        _fail("public_key", "must be an ASCII-armored OpenPGP public key")
    return text


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    name: str
    group: str
    credential: str
    poll_interval: int
    signing_keys: tuple[PublicKey, ...]

    @classmethod
    def from_json(cls, obj: object) -> Enrollment:
        req = frozenset({"device_id", "name", "group", "credential", "poll_interval", "signing_keys"})
        o = _object(obj, "enrollment answer", req, req, False)
        return cls(
            device_id=_text(o["device_id"], "device_id", 128),
            name=check_name(o["name"], "device name"),
            group=check_name(o["group"], "group"),
            credential=_text(o["credential"], "credential", 1024),
            poll_interval=_int(o["poll_interval"], "poll_interval", MIN_POLL_SECONDS, MAX_POLL_SECONDS),
            signing_keys=tuple(PublicKey.from_json(k) for k in _list(o["signing_keys"], "signing_keys", 64)),
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "signing_keys": [k.to_json() for k in self.signing_keys]}


@dataclass(frozen=True)
class InstalledApp:
    """What a device runs of one app: the version ``current`` names, and the one before it."""

    version: str | None
    previous: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str) -> InstalledApp:
        o = _object(obj, where, frozenset({"version", "previous"}), frozenset({"version"}), True)
        return cls(
            _optional_text(o["version"], f"{where} version", 128),
            _optional_text(o.get("previous"), f"{where} previous", 128),
        )


@dataclass(frozen=True)
class ActionReport:
    """The state of the action a device is working on, as its heartbeat carries it."""

    action_id: str
    state: FeedbackState

    @classmethod
    def from_json(cls, obj: object) -> ActionReport:
        o = _object(obj, "action", frozenset({"action_id", "state"}), frozenset({"action_id", "state"}), True)
        return cls(check_action_id(o["action_id"]), _state(o["state"]))


def check_action_id(value: object) -> str:
    if type(value) is not str or not ACTION_ID_RE.fullmatch(value):
        _fail("action_id", "must be 1 to 128 letters, digits, '_', '.', ':' or '-'")
    return value


def _state(value: object) -> FeedbackState:
    if not isinstance(value, str) or value not in FeedbackState.__members__.values():
        _fail("state", f"must be one of {', '.join(s.value for s in FeedbackState)}")
    return FeedbackState(value)


@dataclass(frozen=True)
class Heartbeat:
    """A device's health and what it runs; every field is what the device measured itself."""

    agent_version: str
    uptime: int  # seconds since the device booted
    cpu_percent: int  # 0-100, of all cores, since the last heartbeat
    memory_total: int  # bytes
    memory_used: int
    disk_total: int  # bytes, of the filesystem the agent installs to
    disk_free: int
    apps: dict[str, InstalledApp] = field(default_factory=dict)
    action: ActionReport | None = None

    FIELDS = frozenset(
        {
            "agent_version",
            "uptime",
            "cpu_percent",
            "memory_total",
            "memory_used",
            "disk_total",
            "disk_free",
            "apps",
            "action",
        }
    )

    @classmethod
    def from_json(cls, obj: object) -> Heartbeat:
        o = _object(obj, "heartbeat", cls.FIELDS, cls.FIELDS - {"apps", "action"}, True)
        apps = o.get("apps", {})
        if not isinstance(apps, Mapping) or len(apps) > MAX_APPS:
            _fail("apps", f"must be an object of at most {MAX_APPS} apps")
        return cls(
            agent_version=_text(o["agent_version"], "agent_version", 64, allow_empty=True),
            uptime=_int(o["uptime"], "uptime"),
            cpu_percent=_int(o["cpu_percent"], "cpu_percent", 0, 100),
            memory_total=_int(o["memory_total"], "memory_total"),
            memory_used=_int(o["memory_used"], "memory_used"),
            disk_total=_int(o["disk_total"], "disk_total"),
            disk_free=_int(o["disk_free"], "disk_free"),
            apps={check_name(k, "app name"): InstalledApp.from_json(v, f"apps[{k!r}]") for k, v in apps.items()},
            action=None if o.get("action") is None else ActionReport.from_json(o["action"]),
        )

    def to_json(self) -> dict[str, Any]:
        body = {k: getattr(self, k) for k in self.FIELDS - {"apps", "action"}}
        # explicit dicts: ``asdict`` deep-copies and costs several times more, on every check-in
        body["apps"] = {k: {"version": v.version, "previous": v.previous} for k, v in self.apps.items()}
        body["action"] = (
            None if self.action is None else {"action_id": self.action.action_id, "state": self.action.state}
        )
        return body


@dataclass(frozen=True)
class HealthCheck:
    """A command that must exit 0, or a URL that must answer 2xx, within ``timeout`` seconds."""

    command: str | None = None
    url: str | None = None
    timeout: int = 60

    @classmethod
    def from_json(cls, obj: object) -> HealthCheck:
        f = frozenset({"command", "url", "timeout"})
        o = _object(obj, "health", f, frozenset(), False)
        return cls(
            _optional_text(o.get("command"), "health command", 4096),
            _optional_text(o.get("url"), "health url", 2048),
            _int(o.get("timeout", 60), "health timeout", 1, 3600),
        )


@dataclass(frozen=True)
class AppSpec:
    """How a device installs an app: where, and the commands around the switch (run by ``sh -c``)."""

    name: str
    bundle: str
    install_dir: str  # absolute; holds versions/<version>/ and the ``current`` link
    pre_install: str | None = None  # run in the new version's directory before the switch
    restart: str | None = None
    health: HealthCheck | None = None
    keep: int = 3  # versions kept on the device, the current one included

    @classmethod
    def from_json(cls, obj: object) -> AppSpec:
        f = frozenset({"name", "bundle", "install_dir", "pre_install", "restart", "health", "keep"})
        o = _object(obj, "app", f, frozenset({"name", "bundle", "install_dir"}), False)
        install_dir = _text(o["install_dir"], "install_dir", 1024)
        if not install_dir.startswith("/"):
            _fail("install_dir", "must be an absolute path")
        return cls(
            name=check_name(o["name"], "app name"),
            bundle=_text(o["bundle"], "bundle", 128),
            install_dir=install_dir,
            pre_install=_optional_text(o.get("pre_install"), "pre_install", 4096),
            restart=_optional_text(o.get("restart"), "restart", 4096),
            health=None if o.get("health") is None else HealthCheck.from_json(o["health"]),
            keep=_int(o.get("keep", 3), "keep", 2, 100),
        )


@dataclass(frozen=True)
class Window:
    """A maintenance window in the device's local time: install only from ``start`` to
    ``end`` (``end`` before ``start`` spans midnight); downloading may happen before."""

    start: str  # "HH:MM"
    end: str
    timezone: str = "UTC"  # an IANA name; the device's zone database decides

    @classmethod
    def from_json(cls, obj: object) -> Window:
        f = frozenset({"start", "end", "timezone"})
        o = _object(obj, "window", f, frozenset({"start", "end"}), False)
        for key in ("start", "end"):
            if type(o[key]) is not str or not WINDOW_TIME_RE.fullmatch(o[key]):
                _fail(f"window {key}", "must be HH:MM, 00:00 to 23:59")
        return cls(o["start"], o["end"], _text(o.get("timezone", "UTC"), "window timezone", 64))


@dataclass(frozen=True)
class Action:
    """One thing the control plane wants of a device, until the device reports a terminal state."""

    action_id: str
    kind: ActionKind
    deployment: str
    app: AppSpec
    version: str | None  # the bundle version to run; None with ROLLBACK: no version (the app removed)
    allow_downgrade: bool = False
    window: Window | None = None

    @classmethod
    def from_json(cls, obj: object) -> Action:
        f = frozenset({"action_id", "kind", "deployment", "app", "version", "allow_downgrade", "window"})
        o = _object(obj, "action", f, frozenset({"action_id", "kind", "deployment", "app", "version"}), False)
        try:
            kind = ActionKind(o["kind"])
        except ValueError:
            _fail("action kind", f"must be one of {', '.join(k.value for k in ActionKind)}")
        return cls(
            action_id=check_action_id(o["action_id"]),
            kind=kind,
            deployment=_text(o["deployment"], "deployment", 128),
            app=AppSpec.from_json(o["app"]),
            version=_optional_text(o["version"], "version", 128),
            allow_downgrade=_bool(o.get("allow_downgrade", False), "allow_downgrade"),
            window=None if o.get("window") is None else Window.from_json(o["window"]),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckIn:
    """The answer to a heartbeat: call again in ``poll_interval`` seconds (plus jitter).
    ``runtime``: what the device's runtime sensor does (``wire.runtime``); None from a server
    without one, and the sensor stays off."""

    poll_interval: int
    actions: tuple[Action, ...] = ()
    keys_digest: str = ""  # sha256 of the signing keys document; a change means: GET KEYS
    runtime: RuntimeSettings | None = None

    @classmethod
    def from_json(cls, obj: object) -> CheckIn:
        from .runtime import RuntimeSettings  # wire.runtime builds on this module

        o = _object(
            obj,
            "check-in answer",
            frozenset({"poll_interval", "actions", "keys_digest", "runtime"}),
            frozenset({"poll_interval"}),
            False,
        )
        runtime = o.get("runtime")
        return cls(
            poll_interval=_int(o["poll_interval"], "poll_interval", MIN_POLL_SECONDS, MAX_POLL_SECONDS),
            actions=tuple(Action.from_json(a) for a in _list(o.get("actions", []), "actions", 64)),
            keys_digest=_text(o.get("keys_digest", ""), "keys_digest", 64, allow_empty=True),
            runtime=None if runtime is None else RuntimeSettings.from_json(runtime),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "poll_interval": self.poll_interval,
            "actions": [a.to_json() for a in self.actions],
            "keys_digest": self.keys_digest,
        }
        if self.runtime is not None:
            body["runtime"] = self.runtime.to_json()
        return body


@dataclass(frozen=True)
class EdgeOffer:
    """An edge that holds the bundle version Completed; ``url`` is its base (``http://host:port``)."""

    name: str
    url: str
    site: str | None = None
    city: str | None = None
    country: str | None = None

    @classmethod
    def from_json(cls, obj: object) -> EdgeOffer:
        f = frozenset({"name", "url", "site", "city", "country"})
        o = _object(obj, "edge", f, frozenset({"name", "url"}), False)
        url = _text(o["url"], "edge url", 2048)
        if not url.startswith(("http://", "https://")):
            _fail("edge url", "must start with http:// or https://")
        return cls(
            _text(o["name"], "edge name", 128),
            url.rstrip("/"),
            *(_optional_text(o.get(k), f"edge {k}", 128) for k in ("site", "city", "country")),
        )


@dataclass(frozen=True)
class FileSource:
    """One file of the bundle: its ``repo/path`` on an edge and the signed-URL token that opens it there.

    Size and sha256 are here for progress only: the device checks every byte against the
    signed manifest, never against this answer."""

    path: str
    size: int
    sha256: str
    token: str

    @classmethod
    def from_json(cls, obj: object) -> FileSource:
        f = frozenset({"path", "size", "sha256", "token"})
        o = _object(obj, "file", f, f, False)
        return cls(
            _text(o["path"], "file path", 4096),
            _int(o["size"], "file size"),
            _text(o["sha256"], "sha256", 64),
            _text(o["token"], "token", 4096),
        )


@dataclass(frozen=True)
class Sources:
    """Where a device gets an action's bundle version: the manifest exactly as signed, its
    armored signature, the edges nearest first, and the files with their tokens, good
    until ``expires`` (ms since the epoch; ask again after)."""

    bundle: str
    version: str
    manifest: str  # the canonical manifest; its UTF-8 bytes are what was signed
    signature: str
    edges: tuple[EdgeOffer, ...]
    files: tuple[FileSource, ...]
    expires: int

    @classmethod
    def from_json(cls, obj: object) -> Sources:
        f = frozenset({"bundle", "version", "manifest", "signature", "edges", "files", "expires"})
        o = _object(obj, "sources", f, f, False)
        return cls(
            bundle=_text(o["bundle"], "bundle", 128),
            version=_text(o["version"], "version", 128),
            manifest=_text(o["manifest"], "manifest", 1 << 30, lines=True),
            signature=_text(o["signature"], "signature", 1 << 16, lines=True),
            edges=tuple(EdgeOffer.from_json(e) for e in _list(o["edges"], "edges", 1000)),
            files=tuple(FileSource.from_json(x) for x in _list(o["files"], "files", 1_000_000)),
            expires=_int(o["expires"], "expires"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("bundle", "version", "manifest", "signature", "expires")},
            "edges": [asdict(e) for e in self.edges],
            "files": [asdict(x) for x in self.files],
        }


@dataclass(frozen=True)
class Feedback:
    """One state change of an action, as the device saw it. ``message`` holds a failure's
    output (its last ``MAX_MESSAGE`` characters); ``rolled_back`` says whether the version
    from before runs again after a failure."""

    action_id: str
    state: FeedbackState
    step: FlowStep | None = None
    message: str = ""
    version: str | None = None  # the version ``current`` names after this change
    rolled_back: bool = False
    bytes_done: int = 0
    bytes_total: int = 0
    time: int = 0  # ms since the epoch, the device's clock

    FIELDS = frozenset(
        {"action_id", "state", "step", "message", "version", "rolled_back", "bytes_done", "bytes_total", "time"}
    )

    @classmethod
    def from_json(cls, obj: object) -> Feedback:
        o = _object(obj, "feedback", cls.FIELDS, frozenset({"action_id", "state"}), True)
        step = o.get("step")
        if step is not None:
            try:
                step = FlowStep(step)
            except ValueError:
                _fail("step", f"must be one of {', '.join(s.value for s in FlowStep)}")
        return cls(
            action_id=check_action_id(o["action_id"]),
            state=_state(o["state"]),
            step=step,
            message=_text(o.get("message", ""), "message", MAX_MESSAGE, allow_empty=True, lines=True),
            version=_optional_text(o.get("version"), "version", 128),
            rolled_back=_bool(o.get("rolled_back", False), "rolled_back"),
            bytes_done=_int(o.get("bytes_done", 0), "bytes_done"),
            bytes_total=_int(o.get("bytes_total", 0), "bytes_total"),
            time=_int(o.get("time", 0), "time"),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}


def clip_message(text: str) -> str:
    """The tail of a command's output that fits a feedback message, control characters but
    newline and tab replaced, so a report never fails for the bytes a command printed."""
    clean = "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs") else "?" for ch in text)
    return clean[-MAX_MESSAGE:]


@dataclass(frozen=True)
class SigningKeys:
    """The service's public signing keys. ``document`` is canonical JSON of the key list
    (what was signed); ``signature`` is an armored detached signature over its UTF-8 bytes
    by a key the device already trusts, checked before any key in it is."""

    document: str
    signature: str

    @classmethod
    def from_json(cls, obj: object) -> SigningKeys:
        f = frozenset({"document", "signature"})
        o = _object(obj, "signing keys", f, f, False)
        return cls(
            _text(o["document"], "document", 1 << 22, lines=True),
            _text(o["signature"], "signature", 1 << 16, lines=True),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encode_keys_document(keys: tuple[PublicKey, ...], created: int) -> str:
    """The signed form of a key list: canonical JSON with the time it was made (ms), so a
    device refuses a document older than the one it holds (no replay of a retired set)."""
    body = {"created": created, "keys": [k.to_json() for k in keys]}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_keys_document(text: str) -> tuple[int, tuple[PublicKey, ...]]:
    o = _object(loads(text), "keys document", frozenset({"created", "keys"}), frozenset({"created", "keys"}), True)
    keys = tuple(PublicKey.from_json(k) for k in _list(o["keys"], "keys", 64))
    if not keys:
        _fail("keys document", "lists no key")
    return _int(o["created"], "created"), keys


def sources_path(action_id: str) -> str:
    return f"{DEVICE_API}/actions/{quote(action_id, safe='')}/sources"


def download_url(edge_url: str, path: str, token: str) -> str:
    """The signed URL of ``repo/path`` on an edge: the path quoted segment by segment."""
    return f"{edge_url.rstrip('/')}/artifactory/{quote(path, safe='/')}?{urlencode({'sig': token})}"


def device_headers(credential: str) -> dict[str, str]:
    return {DEVICE_TOKEN_HEADER: credential}


_VERSION_PART = re.compile(r"(\d+)|([^\d.+-]+)")
VersionKey = tuple[tuple[tuple[int, int | str], ...], int, tuple[tuple[int, int | str], ...]]


def _parts(text: str) -> list[tuple[int, int | str]]:
    return [(1, int(n)) if n else (0, w) for n, w in _VERSION_PART.findall(text)]


def version_key(version: str) -> VersionKey:
    """Order of versions as people number them: ``1.10.0`` after ``1.9.2``, ``2.0.0-rc1``
    before ``2.0.0``, ``1.0`` equal to ``1.0.0``; numbers compare as numbers (after words),
    build metadata (after ``+``) ignored. The control plane and the agent refuse a
    downgrade by this same rule."""
    release, dash, pre = version.partition("+")[0].partition("-")
    parts = _parts(release)
    while parts and parts[-1] == (1, 0):
        parts.pop()
    return tuple(parts), 0 if dash else 1, tuple(_parts(pre))


def is_downgrade(running: str | None, target: str) -> bool:
    """Whether installing ``target`` over ``running`` goes back in versions."""
    return running is not None and version_key(target) < version_key(running)
