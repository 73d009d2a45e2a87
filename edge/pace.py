"""How slow and how long a blob upload may be: a minimum rate over a window, and a deadline.

A sender that trickles bytes (or none) would hold a connection, a per-blob lock and a
staged file for ever. ``PaceGuard`` follows one PUT body: every ``window`` seconds at
least ``min_rate * window`` bytes must have arrived since the last window ended, and the
whole body must arrive within ``deadline`` seconds. ``read`` waits for the next chunk
only until the moment the upload would break one of these rules if nothing more came,
so a stalled sender is cut off on time without polling. Times are the event loop's
monotonic clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from repository.errors import RepositoryError


class UploadTooSlow(RepositoryError):
    """A blob upload below the minimum rate or past its deadline: cut off, its staging freed."""

    status = 408
    default_message = "Upload too slow"


@dataclass(frozen=True)
class UploadPace:
    min_rate: int = 0  # bytes per second over each window; 0: no minimum
    window: float = 30.0  # seconds
    deadline: float = 0.0  # seconds for one PUT body; 0: none

    @property
    def need(self) -> float:
        """Bytes that must arrive in every window."""
        return self.min_rate * self.window


class PaceGuard:
    def __init__(self, pace: UploadPace, what: str) -> None:
        self.pace = pace
        self.what = what
        self.loop = asyncio.get_running_loop()
        self.started = self.window_start = self.loop.time()
        self.window_base = 0  # bytes received when the current window began
        self.received = 0

    def alarm(self) -> float | None:
        """The loop time at which, if no more bytes arrive, the upload breaks a rule."""
        alarms = []
        if self.pace.deadline:
            alarms.append(self.started + self.pace.deadline)
        if self.pace.min_rate:
            end = self.window_start + self.pace.window
            if self.received - self.window_base >= self.pace.need:  # this window is satisfied already
                end += self.pace.window
            alarms.append(end)
        return min(alarms) if alarms else None

    def check(self, now: float) -> None:
        """Raise UploadTooSlow if the bytes counted so far, all received before ``now``, break a rule."""
        if self.pace.deadline and now >= self.started + self.pace.deadline:
            raise UploadTooSlow(
                f"{self.what}: upload cut off at its deadline of {self.pace.deadline:g} s after {self.received}"
                " bytes; its staged bytes are freed, send the blob again from byte 0"
            )
        while self.pace.min_rate and now >= self.window_start + self.pace.window:
            got = self.received - self.window_base
            if got < self.pace.need:
                raise UploadTooSlow(
                    f"{self.what}: upload cut off: {got} bytes in {self.pace.window:g} s, below the minimum rate"
                    f" of {self.pace.min_rate} bytes/s; its staged bytes are freed, send the blob again from byte 0"
                )
            self.window_start += self.pace.window
            self.window_base = self.received

    async def read(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk of the body (None at its end), or UploadTooSlow. After UploadTooSlow the
        iterator is finished: the body is abandoned."""
        alarm = self.alarm()
        try:
            async with asyncio.timeout_at(alarm) as timer:
                chunk = await anext(chunks, None)
        except TimeoutError:
            if alarm is None or not timer.expired():
                raise  # a time-out of the body's own
            self.check(max(self.loop.time(), alarm))  # nothing arrived before the alarm: raises
            raise UploadTooSlow(f"{self.what}: upload cut off, too slow") from None
        self.check(self.loop.time())
        if chunk is not None:
            self.received += len(chunk)
        return chunk
