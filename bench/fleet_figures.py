"""What the fleet benchmark reads of its processes: CPU seconds and resident memory, from /proc.

The load generator shares the machine's cores with the services it loads, so every figure
is printed for both sides: a reader can tell which one ran out.
"""

from __future__ import annotations

import resource

from distribute import cpu_seconds
from releases import vm_kib

__all__ = ["cpu_seconds", "vm_kib", "own_cpu_seconds", "CpuSpent"]


def own_cpu_seconds() -> float:
    """User plus system time of this process (the load generator), every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuSpent:
    """CPU seconds of named processes, and of this one as ``label``, since it was made."""

    def __init__(self, pids: dict[str, int], label: str = "load generator") -> None:
        self.pids = pids
        self.label = label
        self.before = self._now()

    def _now(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()} | {self.label: own_cpu_seconds()}

    def spent(self) -> dict[str, float]:
        now = self._now()
        return {name: now[name] - self.before[name] for name in now}

    def line(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.spent().items())
