"""The agent's settings, declared once: defaults, then ``DIR/agent.toml``, then command-line flags.

Unknown keys and wrong types are refused with a message naming the key, before the
agent does anything. Nothing else in the agent reads the environment, except the
crash hook the tests use (``NODE_AGENT_STOP_AT``), which is read here too.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

CONFIG_NAME = "agent.toml"
STOP_AT_ENV = "NODE_AGENT_STOP_AT"


class SettingError(Exception):
    """A setting the agent cannot run with; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid setting {key!r}: {problem}")


@dataclass(frozen=True)
class AgentSettings:
    data_dir: Path
    bandwidth_limit: int = 0  # bytes per second for downloads; 0: no cap
    jitter: float = 0.1  # each poll waits the server's interval times 1 +/- this fraction
    max_backoff: int = 300  # seconds: the longest wait between retries when the server is down
    ca_file: Path | None = None  # PEM bundle for TLS; the system store when unset
    http_timeout: int = 30  # seconds for one call to the control plane or an edge (connect and each read)
    probe_timeout: float = 5.0  # seconds an edge may take to answer the speed probe
    probe_workers: int = 4  # edges measured in parallel
    hook_timeout: int = 600  # seconds pre_install and restart may run before they are killed
    # every app's install_dir is placed under this directory: several agents on one host (a
    # test bench, a staging box) each install into their own tree; unset: install_dir as given
    install_root: Path | None = None
    runtime_hash_cache: int = 4096  # executables whose sha256 the runtime sensor remembers
    drift_rate: int = 4 << 20  # bytes per second read when installed files are checked; 0: no cap
    drift_interval: int = 600  # seconds between checks of the installed files
    stop_at: str | None = None  # test hook: kill -9 the agent itself at this step

    def __post_init__(self) -> None:
        _check_range("bandwidth_limit", self.bandwidth_limit, 0, 1 << 40)
        _check_range("jitter", self.jitter, 0, 0.5)
        _check_range("max_backoff", self.max_backoff, 1, 24 * 3600)
        _check_range("http_timeout", self.http_timeout, 1, 3600)
        _check_range("probe_timeout", self.probe_timeout, 0.1, 600)
        _check_range("probe_workers", self.probe_workers, 1, 64)
        _check_range("hook_timeout", self.hook_timeout, 1, 24 * 3600)
        _check_range("runtime_hash_cache", self.runtime_hash_cache, 16, 1 << 20)
        _check_range("drift_rate", self.drift_rate, 0, 1 << 40)
        _check_range("drift_interval", self.drift_interval, 1, 7 * 24 * 3600)
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SettingError("ca_file", f"{self.ca_file} is not a readable file")

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "identity.json"


def _check_range(key: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SettingError(key, f"must be a number from {low} to {high}")


_TYPES: dict[str, tuple[type, ...]] = {
    "bandwidth_limit": (int,),
    "jitter": (int, float),
    "max_backoff": (int,),
    "ca_file": (str,),
    "http_timeout": (int,),
    "probe_timeout": (int, float),
    "probe_workers": (int,),
    "hook_timeout": (int,),
    "install_root": (str,),
    "runtime_hash_cache": (int,),
    "drift_rate": (int,),
    "drift_interval": (int,),
}


PATHS = frozenset({"ca_file", "install_root"})


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _TYPES:
            raise SettingError(key, f"unknown key in {source} (known: {', '.join(sorted(_TYPES))})")
        if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
            raise SettingError(key, f"wrong type in {source}: {type(value).__name__}")
        out[key] = Path(str(value)) if key in PATHS else value
    return out


def load_settings(data_dir: Path, flags: Mapping[str, Any] | None = None) -> AgentSettings:
    """Defaults, then ``data_dir/agent.toml`` when present, then the flags that were given."""
    values: dict[str, Any] = {}
    config = data_dir / CONFIG_NAME
    if config.is_file():
        try:
            values.update(_checked(tomllib.loads(config.read_text("utf-8")), str(config)))
        except tomllib.TOMLDecodeError as exc:
            raise SettingError(CONFIG_NAME, str(exc)) from None
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    values.update(_checked({k: str(v) if k in PATHS else v for k, v in given.items()}, "the flags"))
    known = {f.name for f in fields(AgentSettings)}
    assert set(values) <= known
    if "install_root" in values:
        values["install_root"] = values["install_root"].absolute()
    settings = AgentSettings(data_dir=data_dir.absolute(), **values)
    return replace(settings, stop_at=os.environ.get(STOP_AT_ENV) or None)
