"""The edge's request pipeline, in one middleware layer.

Every request passes, in this order (DESIGN.md's access pipeline): its request id
(``request_ids``), the metrics and audit steps around everything else, the error mapping
(``error_response``), the access steps (client address, IP and geo rules, signed URLs,
identity: ``AccessControl.admit``), then the handler. Each was a middleware of its own; aiohttp
pays a coroutine, a partial and a frame per layer and per request, and the metrics and the
audit step both sent the response, so one layer does it all, in the same order.

The response is sent here (``prepare`` and ``write_eof``, which aiohttp would otherwise call
after the middlewares return) so that the audit record and the metrics know how it ended:
complete or cut off, and how many body bytes went out (counted by the response writer's
``on_body_write`` hook, and by ``SendfileResponse`` for what the kernel sent). Both are made
from the finished request in batches (edge/finished.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from repository.http.metrics import CLIENT_CLOSED, metrics_key
from repository.http.middlewares import Handler, error_response
from repository.http.request_ids import begin_request
from repository.logs import current_request_id

from .access.context import AccessContext, access_context
from .access.middleware import AccessControl, access_control
from .finished import Finished, finished_key
from .keys import audit_trail_key


@dataclass(frozen=True, slots=True)
class _Steps:
    """What every request needs from the app, looked up once at start rather than per request."""

    control: AccessControl
    finished: Finished


def setup_pipeline(app: web.Application) -> None:
    """The edge's one middleware, given the app's steps once its cleanup contexts have made them."""
    found: list[_Steps] = []

    async def find_steps(app: web.Application) -> None:  # on_startup runs after the cleanup contexts
        finished = app[finished_key] = Finished(app[audit_trail_key], app[metrics_key])
        found.append(_Steps(app[access_control], finished))

    @web.middleware
    async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = begin_request(request)
        steps = found[0]
        ctx = AccessContext()
        request[access_context] = ctx
        request.writer.on_body_write = ctx.count_sent
        started = time.monotonic()
        response: web.StreamResponse | None = None
        status, aborted = CLIENT_CLOSED, True
        try:
            try:
                if (admitting := steps.control.admit(request, ctx)) is not None:
                    await admitting
                response = await handler(request)
            except Exception as exc:
                response = error_response(request, exc)
                if response is None:
                    raise
            status = response.status
            try:
                await response.prepare(request)
                await response.write_eof()
                aborted = False
            except ConnectionError:
                pass  # the client went away; aiohttp's own finish of this response sees the same, quietly
            return response
        except web.HTTPException as exc:  # redirects (presigned S3 downloads), sent by aiohttp as they are
            response, status, aborted = exc, exc.status, False
            raise
        except BaseException:  # the client went away while the handler streamed, or the task was cancelled
            status = ctx.status or CLIENT_CLOSED
            raise
        finally:
            steps.finished.add(request, ctx, response, status, time.monotonic() - started, aborted)
            current_request_id.reset(token)

    app.on_startup.append(find_steps)
    app.middlewares.append(edge_middleware)
