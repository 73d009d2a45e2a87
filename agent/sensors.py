"""What the device measures of itself for a heartbeat (psutil): CPU, memory, disk, uptime."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from wire.fleet import ActionReport, Heartbeat, InstalledApp

from . import __version__


def heartbeat(disk_path: Path, apps: dict[str, InstalledApp], action: ActionReport | None) -> Heartbeat:
    """CPU is the share of all cores since the previous call (psutil keeps the last sample)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(disk_path))
    return Heartbeat(
        agent_version=__version__,
        uptime=max(0, int(time.time() - psutil.boot_time())),
        cpu_percent=min(100, max(0, round(psutil.cpu_percent(interval=None)))),
        memory_total=memory.total,
        memory_used=memory.total - memory.available,
        disk_total=disk.total,
        disk_free=disk.free,
        apps=apps,
        action=action,
    )
