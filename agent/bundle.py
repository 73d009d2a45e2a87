"""What a device checks of a bundle version before it installs anything, and where its files go.

The manifest counts only when its signature verifies with a key the device trusts,
and only for the bundle and version the action names (no mix-and-match). Files land
in the version directory at their target path minus the directory all targets share
(``releases-local/till/2.3.0/bin/till.py`` and ``.../etc/till.conf`` install as
``bin/till.py`` and ``etc/till.conf``).
"""

from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire.fleet import Action, Window
from wire.manifest import Manifest, decode
from wire.signatures import SignatureRefused

from .trust import DeviceTrust


class BundleRefused(Exception):
    """A manifest this device will not install from; the message says why."""


def verified_manifest(trust: DeviceTrust, manifest: str, signature: str, action: Action) -> Manifest:
    """The manifest, once its signature is by a trusted key and it is the action's bundle version."""
    data = manifest.encode("utf-8")
    try:
        trust.verify(data, signature)
    except SignatureRefused as exc:
        raise BundleRefused(f"manifest of {action.app.bundle} {action.version} refused: {exc.reason}") from None
    decoded = decode(data)
    if (decoded.name, decoded.version) != (action.app.bundle, action.version):
        raise BundleRefused(
            f"the signed manifest is {decoded.name} {decoded.version}, not {action.app.bundle} {action.version}"
        )
    return decoded


def install_paths(manifest: Manifest) -> dict[str, str]:
    """target -> path inside the version directory."""
    split = [a.target.split("/") for a in manifest.artifacts]
    common = os.path.commonprefix([parts[:-1] for parts in split])
    return {"/".join(parts): "/".join(parts[len(common) :]) for parts in split}


def in_window(window: Window | None, now: datetime) -> bool:
    """Whether ``now`` (aware) falls in the window, in the window's time zone; no window: always."""
    if window is None:
        return True
    try:
        zone = ZoneInfo(window.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BundleRefused(f"unknown time zone {window.timezone!r} in the maintenance window") from None
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    start, end = (int(t[:2]) * 60 + int(t[3:]) for t in (window.start, window.end))
    if start == end:
        return True
    return start <= minute < end if start < end else minute >= start or minute < end
