"""Settings declared once as frozen dataclasses, loaded and validated in one place.

Sources, later ones winning: the dataclass defaults, a TOML file, environment
variables (``PREFIX_KEY``, ``PREFIX_SECTION_KEY`` for nested sections), then
command-line flags. Unknown keys and wrong types are refused with a message
naming the key, so a typo in a config file stops the service instead of being
silently ignored. Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from storage_backends import BACKEND_NAMES, MAX_WRITE_CONCURRENCY

S = TypeVar("S")


class SettingsError(ValueError):
    pass


# The database URLs a node takes (psycopg 3 is the PostgreSQL driver either way).
DATABASE_SCHEMES = ("postgresql://", "postgresql+psycopg://")


class InvalidSetting(ValueError):
    """Raised by a settings dataclass's own checks about one of its fields.

    The loader knows where the dataclass sits (``access.rules[2].``) and names the
    setting in full; outside the loader the message names the field alone.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"setting '{field}' {problem}")


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _coerce(key: str, tp: Any, value: Any, from_text: bool) -> Any:
    """Check (or, for environment text, convert) one value against its declared type."""
    origin = typing.get_origin(tp)
    if _is_section(tp):  # one table of a list of tables
        if not isinstance(value, Mapping):
            raise SettingsError(f"setting '{key}' must be a table")
        return _build(tp, value, f"{key}.", {}, "")
    if origin in (typing.Union, types.UnionType):
        options = [t for t in typing.get_args(tp) if t is not type(None)]
        if value is None or (from_text and value == ""):
            if len(options) < len(typing.get_args(tp)):
                return None
            raise SettingsError(f"setting '{key}' may not be empty")
        return _coerce(key, options[0], value, from_text)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if _is_section(item):  # a list of tables; in the environment, as JSON
            items = _json_list(key, value) if from_text and isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise SettingsError(f"setting '{key}' must be a list of tables")
            return tuple(_coerce(f"{key}[{i}]", item, v, from_text=False) for i, v in enumerate(items))
        items = [v.strip() for v in value.split(",") if v.strip()] if from_text and isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise SettingsError(f"setting '{key}' must be a list")
        return tuple(_coerce(key, item, v, from_text) for v in items)
    if tp is bool:
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise SettingsError(f"setting '{key}' must be true or false, not {value!r}")
    if tp in (int, float):
        if from_text and isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                raise SettingsError(f"setting '{key}' must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and not isinstance(value, int)):
            raise SettingsError(f"setting '{key}' must be {'an integer' if tp is int else 'a number'}, not {value!r}")
        return tp(value)
    if tp is Path:
        if not isinstance(value, str | Path):
            raise SettingsError(f"setting '{key}' must be a path")
        return Path(value).expanduser()
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"setting '{key}' must be a string, not {value!r}")
        return value
    raise TypeError(f"unsupported settings type for {key}: {tp!r}")


def _json_list(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise SettingsError(f"setting '{key}' must be a JSON list of objects") from None


def _build(cls: type[S], values: Mapping[str, Any], prefix: str, env: Mapping[str, str], env_prefix: str) -> S:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown setting '{prefix}{unknown[0]}'")
    kwargs: dict[str, Any] = {}
    for name in known:
        tp, key = hints[name], f"{prefix}{name}"
        env_name = f"{env_prefix}{key.replace('.', '_')}".upper()
        if _is_section(tp):
            section = values.get(name, {})
            if not isinstance(section, Mapping):
                raise SettingsError(f"setting '{key}' must be a table")
            kwargs[name] = _build(tp, section, f"{key}.", env, env_prefix)
        elif env_name in env:
            kwargs[name] = _coerce(env_name, tp, env[env_name], from_text=True)
        elif name in values:
            kwargs[name] = _coerce(key, tp, values[name], from_text=False)
    try:
        return cls(**kwargs)
    except InvalidSetting as exc:
        raise SettingsError(f"setting '{prefix}{exc.field}' {exc.problem}") from None
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def load_settings(
    cls: type[S],
    *,
    config_file: Path | None,
    env: Mapping[str, str],
    env_prefix: str,
    overrides: Mapping[str, Any],
) -> S:
    """Defaults < TOML file < environment < flags (``overrides``, None meaning "not given")."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {config_file} is not valid TOML: {exc}") from None
    settings = _build(cls, values, "", env, env_prefix)
    flags = {k: v for k, v in overrides.items() if v is not None}
    if flags:
        hints = typing.get_type_hints(cls)
        checked = {k: _coerce(k, hints[k], v, from_text=False) for k, v in flags.items()}
        try:
            settings = dataclasses.replace(settings, **checked)  # type: ignore[type-var]
        except (TypeError, ValueError) as exc:  # InvalidSetting included: a flag names a top-level key
            raise SettingsError(str(exc)) from None
    return settings


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    backend: str = "local"
    # local: blobs live under data_dir/blobs unless a root is given
    root: Path | None = None
    # s3
    endpoint_url: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # S3 requests carrying blob bytes in flight at once (blobs of a batch, parts of a large blob)
    write_concurrency: int = 8
    # downloads from a backend without local files: presigned redirect, or stream through the edge
    redirect_downloads: bool = True
    presign_expiry: int = 300

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"setting 'storage.backend' must be one of {', '.join(BACKEND_NAMES)}")
        if self.backend == "s3" and not self.bucket:
            raise ValueError("setting 'storage.bucket' is required with the s3 backend")
        if not 1 <= self.presign_expiry <= 7 * 24 * 3600:
            raise ValueError("setting 'storage.presign_expiry' must be 1 to 604800 seconds")
        if not 1 <= self.write_concurrency <= MAX_WRITE_CONCURRENCY:
            raise ValueError(f"setting 'storage.write_concurrency' must be 1 to {MAX_WRITE_CONCURRENCY}")

    def backend_params(self, data_dir: Path) -> dict[str, Any]:
        if self.backend == "local":
            return {"root": self.root or data_dir / "blobs"}
        return {
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "write_concurrency": self.write_concurrency,
        }


GiB = 1024**3
MiB = 1024**2
DAY = 24 * 3600
MIN_SCRUB_RATE = 1024
EVENT_LOOPS = ("uvloop", "asyncio")


@dataclasses.dataclass(frozen=True)
class ScrubSettings:
    """``[scrub]``: reading every stored blob back now and then, to find bytes that rotted or were edited."""

    # background passes; off, a pass runs only when an admin asks for one (POST /artifactory/api/scrub)
    enabled: bool = True
    # bytes read per second at most, on average over a pass: gentle on the disks serving downloads
    rate: int = 4 * MiB
    # seconds from the end of one pass to the start of the next
    interval: int = 7 * DAY

    def __post_init__(self) -> None:
        if self.rate < MIN_SCRUB_RATE:
            raise InvalidSetting("rate", f"must be at least {MIN_SCRUB_RATE} bytes/s (turn passes off with enabled)")
        if not 1 <= self.interval <= 365 * DAY:
            raise InvalidSetting("interval", f"must be 1 to {365 * DAY} seconds")


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What every service has; each service's settings extend it with its own defaults."""

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 0
    node_id: str = "node"  # answered as X-Artifactory-Id
    admin_token: str | None = None
    max_upload_bytes: int = 10 * GiB
    shutdown_timeout: float = 60.0
    log_level: str = "INFO"
    # GET /metrics for anyone (scrapers on an internal network), or only with an admin credential
    metrics_public: bool = True
    # seconds a client has to send a whole request line and headers, from connecting or from
    # the first byte of a later request; then the connection is closed
    header_timeout: float = 20.0
    # seconds a request body may go without a byte while it is being read; then 408
    body_timeout: float = 60.0
    # seconds an idle connection is kept open for the client's next request
    keepalive_timeout: float = 75.0
    # the event loop: "asyncio" (the standard loop) or "uvloop" (less work per request; the
    # standard loop where uvloop is not installed)
    event_loop: str = "asyncio"
    # where the node keeps its state: unset, a sqlite file in data_dir (catalog.db); or a
    # PostgreSQL URL shared by replicas of the node ("postgresql://user:password@host/db")
    database_url: str | None = None
    # the web console (/ui/): how long a login lasts (hours); the URL users reach the node by,
    # where https makes the session cookie Secure even behind a proxy that speaks plain http to it
    console_session_hours: int = 12
    console_public_url: str | None = None
    storage: StorageSettings = dataclasses.field(default_factory=StorageSettings)
    scrub: ScrubSettings = dataclasses.field(default_factory=ScrubSettings)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("setting 'port' must be 0 to 65535")
        if self.max_upload_bytes < 1:
            raise ValueError("setting 'max_upload_bytes' must be positive")
        if self.admin_token is not None and len(self.admin_token) < 6:
            raise ValueError("setting 'admin_token' must be at least 6 characters")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("setting 'log_level' must be DEBUG, INFO, WARNING or ERROR")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"setting 'event_loop' must be one of {', '.join(EVENT_LOOPS)}")
        if self.database_url is not None and not self.database_url.startswith(DATABASE_SCHEMES):
            raise ValueError(f"setting 'database_url' must start with {' or '.join(DATABASE_SCHEMES)}")
        for key in ("header_timeout", "body_timeout", "keepalive_timeout"):
            if not 0.1 <= getattr(self, key) <= 3600:
                raise ValueError(f"setting '{key}' must be 0.1 to 3600 seconds")
        if not 1 <= self.console_session_hours <= 720:
            raise ValueError("setting 'console_session_hours' must be 1 to 720")
        if self.console_public_url is not None and not self.console_public_url.startswith(("http://", "https://")):
            raise ValueError("setting 'console_public_url' must be an http:// or https:// URL")

    @property
    def database_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def database_target(self) -> str | Path:
        """What the node's ``Database`` opens: the PostgreSQL URL when one is set, else the sqlite file."""
        return self.database_url or self.database_path
