"""JSON-lines logs for both services, so log shippers need no parsing rules.

Every line written while a request is handled carries that request's ``request_id``
(the ``X-Request-ID`` it answers, see ``repository.http.request_ids``): the id lives in
a context variable for the request's task, and a filter on the handler copies it onto
each record. The access log line, written once the request's task is done, reads it
from the request itself.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from repository.http import keys

# The id of the request being handled in this task (and tasks it started), None outside one.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the task that logs it, where there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class JsonAccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, bytes, time, client, user, request id."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        principal = request.get(keys.principal)
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 2),
            "remote": request.remote,
            "user": getattr(principal, "subject", None),
        }
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={"fields": fields, "request_id": request.get(keys.request_id)},
        )
