"""What a deployment asks for, checked, and the phase machine's arithmetic.

A deployment request (``POST /fleet/api/v1/deployments``)::

    {"app", "version", "targets": {"groups": [], "tags": {k: v}, "devices": []},
     "canary": "5%" | N, "phases": [1, "10%", 50, ...],
     "halt_on_failures": "10%" | N, "success_threshold": "95%" | N,
     "window": {"start", "end", "timezone"} | null, "allow_downgrade": false}

Targets: the devices in one of ``groups`` (any group when none is given) that carry every
tag of ``tags``, plus the devices named in ``devices``. Phases split the targeted devices
in device-id order: a canary (a percentage, rounded up, or a count; at least one device),
then explicit phase sizes, each a percentage of all targeted devices or a count, and the
devices left over form a last phase. Neither: one phase of every device. Percentages are
strings (``"5%"``, ``"0.5%"``), counts integers. Names and tags in ``targets`` are only
compared with the devices' own: one no device has matches none.

A phase's participants are its devices that did not refuse (``rejected``: they run a newer
version) and were not canceled. The next phase starts when the current one's succeeded
devices reach ``success_threshold`` of its participants (95% by default: one device
that stays offline does not hold a large phase back forever, while a small phase still
needs every device: 95% of 10 rounds up to 10). The deployment halts when any started
phase's failed devices pass ``halt_on_failures`` (more than it; default 0: the first failure
halts, as a careful operator would want unless told otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from repository.errors import BadRequest
from wire.errors import InvalidInput
from wire.fleet import MAX_TAGS, Window, check_name

PERCENT_RE = re.compile(r"(100|[0-9]{1,2})(?:\.([0-9]{1,2}))?%")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_NAME = 128
MAX_TAG_TEXT = 128
MAX_COUNT = 1_000_000
MAX_PHASES = 16
MAX_TARGET_NAMES = 1000
REQUEST_FIELDS = frozenset(
    {
        "app",
        "version",
        "targets",
        "phases",
        "canary",
        "halt_on_failures",
        "success_threshold",
        "window",
        "allow_downgrade",
    }
)
TARGET_FIELDS = frozenset({"groups", "tags", "devices"})
DEFAULT_SUCCESS = "95%"
DEFAULT_HALT = 0


@dataclass(frozen=True)
class Amount:
    """A share of devices: a percentage (kept in hundredths of a percent) or a count."""

    value: int
    percent: bool

    @classmethod
    def parse(cls, raw: object, where: str, *, low: int = 1) -> Amount:
        """A percentage as a string (``"5%"``, ``"0.5%"``) or a count as an integer (``12``);
        a 400 naming ``where`` otherwise."""
        if type(raw) is int and low <= raw <= MAX_COUNT:
            return cls(raw, False)
        if isinstance(raw, str) and (match := PERCENT_RE.fullmatch(raw)):
            hundredths = int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))
            if low <= hundredths <= 10_000:
                return cls(hundredths, True)
        share = "0% to 100%" if low == 0 else "more than 0% and at most 100%"
        raise BadRequest(
            f"'{where}' must be a percentage such as \"5%\" ({share}, at most two decimals)"
            f" or an integer count of devices ({low} to {MAX_COUNT})"
        )

    @classmethod
    def stored(cls, text: str) -> Amount:
        """An amount as ``str`` wrote it into the database."""
        return cls.parse(text if text.endswith("%") else int(text), "stored amount", low=0)

    def __str__(self) -> str:
        if not self.percent:
            return str(self.value)
        whole, part = divmod(self.value, 100)
        return f"{whole}.{part:02d}".rstrip("0").rstrip(".") + "%"

    def of(self, total: int) -> int:
        """How many of ``total`` devices this amount is (a percentage rounded up), at most ``total``."""
        if self.percent:
            return min(total, math.ceil(total * self.value / 10_000))
        return min(total, self.value)


@dataclass(frozen=True)
class Counts:
    """A phase's devices by outcome (the columns of ``fleet_phases``)."""

    size: int
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    canceled: int = 0

    @property
    def participants(self) -> int:
        return self.size - self.rejected - self.canceled

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.rejected + self.canceled


def reached(counts: Counts, threshold: Amount) -> bool:
    """Whether a phase's successes reach ``threshold`` of its participants (a phase without
    participants has nothing left to wait for)."""
    return counts.succeeded >= threshold.of(counts.participants)


def halts(counts: Counts, limit: Amount) -> bool:
    """Whether a phase's failures pass ``limit`` (strictly more than it)."""
    if limit.percent:
        return counts.failed * 10_000 > limit.value * counts.participants
    return counts.failed > limit.value


def next_phase(phases: list[Counts], current: int, success: Amount, halt: Amount) -> tuple[int, bool]:
    """Where a running deployment goes: (its current phase, whether it halts). A started phase
    whose failures pass the limit halts it; otherwise each phase that reached the success
    threshold starts the next, in one step when several did."""
    if any(halts(c, halt) for c in phases[: current + 1]):
        return current, True
    while current + 1 < len(phases) and reached(phases[current], success):
        current += 1
        if halts(phases[current], halt):
            return current, True
    return current, False


@dataclass(frozen=True)
class Targets:
    groups: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "tags": self.tags, "devices": list(self.devices)}


@dataclass(frozen=True)
class DeploymentRequest:
    app: str
    version: str
    targets: Targets
    phases: tuple[Amount, ...]  # sizes of the phases before the last, which takes the rest
    success_threshold: Amount
    halt_on_failures: Amount
    window: Window | None
    allow_downgrade: bool

    def phase_sizes(self, total: int) -> list[int]:
        """The size of each phase for ``total`` devices: none empty, together ``total``."""
        sizes: list[int] = []
        left = total
        for amount in self.phases:
            size = min(left, max(1, amount.of(total)))
            if size:
                sizes.append(size)
                left -= size
        if left:
            sizes.append(left)
        return sizes


def _text(value: object, where: str, limit: int) -> str:
    """A string of 1 to ``limit`` characters without control characters. Target names and tags
    are only compared with the devices' own, so a name no device can have simply matches none."""
    if not isinstance(value, str) or not 1 <= len(value) <= limit or CONTROL_RE.search(value):
        raise BadRequest(f"'{where}' must hold strings of 1 to {limit} characters without control characters")
    return value


def _names(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_TARGET_NAMES:
        raise BadRequest(f"'{where}' must be a list of at most {MAX_TARGET_NAMES} names")
    return tuple(sorted({_text(item, where, MAX_NAME) for item in raw}))


def _tags(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping) or len(raw) > MAX_TAGS:
        raise BadRequest(f"'targets.tags' must be an object of at most {MAX_TAGS} tags")
    return {str(k): _text(v, f"targets.tags[{str(k)[:64]!r}]", MAX_TAG_TEXT) for k, v in raw.items()}


def _wire(check: Any, value: object, where: str) -> Any:
    """A wire-contract check whose failure is a 400 naming ``where``."""
    try:
        return check(value, where)
    except InvalidInput as exc:
        raise BadRequest(f"'{where}': {exc}") from None


def parse_targets(raw: object) -> Targets:
    if not isinstance(raw, Mapping):
        raise BadRequest("'targets' must be an object with 'groups', 'tags' and/or 'devices'")
    unknown = sorted(set(raw) - TARGET_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field 'targets.{unknown[0]}'; expected groups, tags, devices")
    targets = Targets(
        _names(raw.get("groups", []), "targets.groups"),
        _tags(raw.get("tags", {})),
        _names(raw.get("devices", []), "targets.devices"),
    )
    if not (targets.groups or targets.tags or targets.devices):
        raise BadRequest("'targets' must name at least one group, tag or device")
    return targets


def _phases(body: Mapping[str, Any]) -> tuple[Amount, ...]:
    """The canary, if any, then the explicit phases, if any."""
    canary = (Amount.parse(body["canary"], "canary"),) if "canary" in body else ()
    raw = body.get("phases", [])
    if not isinstance(raw, list) or len(raw) > MAX_PHASES:
        raise BadRequest(f"'phases' must be a list of at most {MAX_PHASES} phase sizes such as \"10%\" or 5")
    return canary + tuple(Amount.parse(item, f"phases[{n}]") for n, item in enumerate(raw))


def parse_deployment(body: Mapping[str, Any]) -> DeploymentRequest:
    """Check a deployment request; a 400 naming the first field that is wrong."""
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; expected some of {', '.join(sorted(REQUEST_FIELDS))}")
    for required in ("app", "version", "targets"):
        if required not in body:
            raise BadRequest(f"'{required}' is required")
    version = _text(body["version"], "version", MAX_NAME)
    window = body.get("window")
    allow_downgrade = body.get("allow_downgrade", False)
    if not isinstance(allow_downgrade, bool):
        raise BadRequest("'allow_downgrade' must be true or false")
    return DeploymentRequest(
        app=_wire(check_name, body["app"], "app"),
        version=version,
        targets=parse_targets(body["targets"]),
        phases=_phases(body),
        success_threshold=Amount.parse(body.get("success_threshold", DEFAULT_SUCCESS), "success_threshold"),
        halt_on_failures=Amount.parse(body.get("halt_on_failures", DEFAULT_HALT), "halt_on_failures", low=0),
        window=None if window is None else _wire(lambda v, _w: Window.from_json(v), window, "window"),
        allow_downgrade=allow_downgrade,
    )
