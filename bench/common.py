"""What every benchmark shares: its failure type and how it runs as a command (download.py
holds the process and load helpers).

``bench/`` is no package: Python puts a script's own folder on ``sys.path``, so a benchmark
imports ``common`` and ``download`` as top-level modules, and the project's packages (and
``devstack``, which starts every process) from the environment it is installed in.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


class BenchError(RuntimeError):
    """A failure worth a one-line message rather than a traceback."""


def run_bench(
    run: Callable[[], None], failures: tuple[type[Exception], ...] = (), overall_timeout: int | None = None
) -> None:
    """Run a benchmark as a command: exit 0 when done, 1 with a one-line message on a
    ``BenchError`` (or one of ``failures``) or once it has run ``overall_timeout`` seconds,
    130 on Ctrl-C.

    SIGTERM unwinds like Ctrl-C (``default_int_handler`` raises ``KeyboardInterrupt``), so
    the benchmark's ExitStack still stops its children and removes its files; SIGINT is set
    too because a shell's background job starts with it ignored. The time limit unwinds the
    same way, from SIGALRM.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)

    def too_long(signum: int, frame: object) -> None:
        raise BenchError(f"the whole run took more than {overall_timeout} s; stopped")

    if overall_timeout is not None:
        signal.signal(signal.SIGALRM, too_long)
        signal.alarm(overall_timeout)
    expected: tuple[type[Exception], ...] = (BenchError, *failures)
    try:
        run()
    except expected as exc:
        sys.exit(f"bench failed: {exc}")
    except KeyboardInterrupt:
        print("\ninterrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.alarm(0)
