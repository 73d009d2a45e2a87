"""Run a service's app until SIGINT/SIGTERM, then shut down gracefully.

Running requests (a long download, say) get ``shutdown_timeout`` seconds to
finish before connections are closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from .http.connections import ConnectionLimits, GuardedAppRunner
from .logs import JsonAccessLogger, flush_access_lines

log = logging.getLogger(__name__)

# How much of a request body aiohttp buffers before it stops reading the socket (it pauses at
# twice this). Its default of 64 KiB makes a fast upload pause and resume the socket every few
# reads; a megabyte keeps bodies flowing at disk speed, and memory stays bounded per connection.
READ_BUFSIZE = 1024 * 1024
# Connections the kernel queues for a listening socket before the server accepts them.
BACKLOG = 1024
# Allocations (less frees) of objects the garbage collector tracks between two collections of the
# youngest ones, once a service has started (``settle_heap``).
YOUNG_COLLECTION = 10_000


class ListenError(Exception):
    pass


@dataclass(frozen=True)
class Listener:
    """Where a process serves: ``host:port``, or a socket bound and listening already (a worker's,
    handed over by its supervisor, edge/workers.py); the signals that stop it; what to call once
    it accepts connections."""

    host: str
    port: int
    sock: socket.socket | None = None
    stop_signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
    on_ready: Callable[[], None] | None = None


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> tuple[LoopFactory | None, str]:
    """The event loop to run on (None: asyncio's default) and its name. uvloop when chosen and
    importable; where it is not installed, the standard loop, with a warning."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the standard asyncio event loop")
        else:
            return uvloop.new_event_loop, "uvloop"
    return None, "asyncio"


async def _serve(
    app: web.Application, listener: Listener, shutdown_timeout: float, limits: ConnectionLimits, name: str
) -> None:
    host, port = listener.host, listener.port
    runner = GuardedAppRunner(
        app,
        limits=limits,
        access_log_class=JsonAccessLogger,
        shutdown_timeout=shutdown_timeout,
        read_bufsize=READ_BUFSIZE,
    )
    await runner.setup()
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop_name = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: the operator does not want to wait
            log.warning("%s: second stop signal, exiting now", name)
            os._exit(1)
        stop.set()

    for sig in listener.stop_signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        site: web.BaseSite
        if listener.sock is not None:
            site = web.SockSite(runner, listener.sock)
        else:
            site = web.TCPSite(runner, host, port, backlog=BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        if listener.sock is None:
            fields = {"url": f"http://{host}:{bound}", "port": bound, "event_loop": loop_name}
        else:  # one of several processes on the port: their supervisor says when the node is ready, and where
            fields = {"event_loop": loop_name}
        log.info("%s ready", name, extra={"fields": fields})
        if listener.on_ready is not None:
            listener.on_ready()
        await stop.wait()
        log.info(
            "%s stopping: letting running requests finish (up to %ss; Ctrl-C again to quit now)",
            name,
            shutdown_timeout,
        )
    finally:
        await runner.cleanup()
        flush_access_lines()
    log.info("%s stopped", name)


def settle_heap() -> None:
    """Once the app has started: what start-up made (modules, the app, caches, connections) is
    collected once and then left out of every later garbage collection (``gc.freeze``). A full
    collection otherwise walks all of it; under load one ran every few seconds and held the loop
    for some 75 ms each time, a few microseconds of every request on average.

    Young objects are collected after ``YOUNG_COLLECTION`` more allocations than frees rather than
    Python's 700. An edge keeps each finished request, and the fields of its access line, for up
    to 50 ms (edge/finished.py, ``repository.logs``): at 700, a collection ran every few dozen
    requests and walked the ones kept, some 1.5 µs of every 4 KiB download, while at this
    threshold they are freed by their reference counts before any collection sees them. Garbage
    in cycles still goes, after at most that many objects (a few MiB)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION, *gc.get_threshold()[1:])


def serve(
    app: web.Application,
    *,
    listener: Listener,
    shutdown_timeout: float,
    limits: ConnectionLimits,
    name: str,
    event_loop: str = "asyncio",
) -> None:
    """Run until a stop signal on the chosen event loop (``loop_factory``); a port that cannot be
    bound is a one-line error, not a traceback."""
    factory, _ = loop_factory(event_loop)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(app, listener, shutdown_timeout, limits, name))
    except ListenError as exc:
        log.error("%s", exc)
        raise SystemExit(f"error: {exc} (choose another with --port)") from None
