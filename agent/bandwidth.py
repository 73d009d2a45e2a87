"""The download bandwidth cap: a token bucket holding at most one second of bytes."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``take(n)`` returns once ``n`` more bytes fit in ``rate`` bytes per second (sleeping, never spinning)."""

    def __init__(
        self, rate: int, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._last = clock()

    def take(self, n: int) -> None:
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate) - n
        self._last = now
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)
