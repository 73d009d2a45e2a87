"""The edge's request class: two things aiohttp does for every request, done the cheaper way.

- Lookups of request state (``request.get(key)``, ``key in request``) go straight to the state
  dict. aiohttp's request inherits them from ``Mapping``, which raises and catches a KeyError
  for every key not set, and most requests lack most keys (a refusal's rule, a raw body, a
  signed URL's reader).
- The edge's one answer hook (``answer``: the request id and worker headers, closing after a raw
  body, the status for the audit step) is called directly when a response is prepared. As an
  ``on_response_prepare`` receiver, it cost a signal dispatch and a coroutine per response.
  Receivers appended to ``on_response_prepare`` still run, after it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from repository.http.request_ids import name_answer

from .access.audit_step import remember_status
from .raw_body import close_after_raw_body

WORKER_HEADER = "X-Edge-Worker"

Answer = Callable[[web.BaseRequest, web.StreamResponse], None]


def answer_for(worker: int) -> Answer:
    """What every answer of this process gets (errors and redirects raised past the middlewares
    too): the request's id (``X-Request-ID``) and, in a worker, which worker answered
    (``X-Edge-Worker``, for operators reading a trace); a close after a request whose body was
    taken raw; and its status, remembered for the audit step."""
    worker_id = str(worker) if worker else None

    def answer(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if worker_id is not None:
            response.headers[WORKER_HEADER] = worker_id
        name_answer(request, response)
        close_after_raw_body(request, response)
        remember_status(request, response)

    return answer


def request_class(answer: Answer) -> type[web.Request]:
    """The request class of one app, which calls ``answer`` as each response is prepared (a
    class per app: each worker's app answers with its own worker id)."""

    class EdgeRequest(web.Request):
        def get(self, key: Any, default: Any = None) -> Any:
            return self._state.get(key, default)

        def __contains__(self, key: object) -> bool:
            return key in self._state

        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            match_info = self._match_info
            if match_info is None:  # as aiohttp: no hooks for what never reached the app
                return
            answer(self, response)
            for app in match_info.apps:  # aiohttp's own hook, without a coroutine of its own
                if on_response_prepare := app.on_response_prepare:
                    await on_response_prepare.send(self, response)

    return EdgeRequest


def setup_requests(app: web.Application, worker: int) -> None:
    """Make the app's requests ``EdgeRequest``s answering for ``worker``, under every server that
    runs the app (``edge serve``'s, and test servers alike): aiohttp's request factory is the
    app's ``_make_request``, whose ``_cls`` argument is the class it makes. Set in the instance's
    dict: aiohttp frowns on subclassing the application and, in debug mode, on new attributes."""
    make = functools.partial(web.Application._make_request, app, _cls=request_class(answer_for(worker)))
    vars(app)["_make_request"] = make
