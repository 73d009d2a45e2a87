"""Run a service's app until SIGINT/SIGTERM, then shut down gracefully.

Running requests (a long download, say) get ``shutdown_timeout`` seconds to
finish before connections are closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .logs import JsonAccessLogger

log = logging.getLogger(__name__)


async def _serve(app: web.Application, host: str, port: int, shutdown_timeout: float, name: str) -> None:
    runner = web.AppRunner(app, access_log_class=JsonAccessLogger, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("%s ready", name, extra={"fields": {"url": f"http://{host}:{bound}", "port": bound}})
        await stop.wait()
        log.info("%s stopping: letting running requests finish", name)
    finally:
        await runner.cleanup()


def serve(app: web.Application, *, host: str, port: int, shutdown_timeout: float, name: str) -> None:
    asyncio.run(_serve(app, host, port, shutdown_timeout, name))
