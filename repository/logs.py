"""JSON-lines logs for both services, so log shippers need no parsing rules.

Every line written while a request is handled carries that request's ``request_id``
(the ``X-Request-ID`` it answers, see ``repository.http.request_ids``): the id lives in
a context variable for the request's task, and a filter on the handler copies it onto
each record. The access log line, written once the request's task is done, reads it
from the request itself.

Access lines are the one log line every request writes, so they skip the ``logging``
machinery (a record, a caller lookup, a filter, a formatter, a flush per line) when the
JSON handler ``setup_logging`` installs is the only place they would go: the line is built
directly, in the same shape, and the lines of one event-loop tick reach the stream in one
write. Under any other configuration they go through ``logging`` as usual.
"""

from __future__ import annotations

import asyncio
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


def timestamp(created: float) -> str:
    """``2026-11-22T10:00:00.123Z``; the part up to the second is formatted once per second."""
    global _second
    second, text = _second  # one tuple, read once: threads that log may replace it meanwhile
    if second != int(created):
        second = int(created)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{int((created - second) * 1000):03d}Z"


_second: tuple[int, str] = (-1, "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": timestamp(record.created),
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


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The services' one log handler: JSON lines on stderr, plus the access lines written
    directly (``write_line``), batched per event-loop tick."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self._lines: list[str] = []

    def write_line(self, line: str) -> None:
        """Queue a finished line; the loop writes the tick's lines once it has run its callbacks."""
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush_lines)
        self._lines.append(line)

    def flush_lines(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write("".join(lines))
                self.flush()
            except Exception:  # as logging does: a broken stderr never fails a request
                self.handleError(logging.makeLogRecord({"msg": "access lines"}))

    def close(self) -> None:
        self.flush_lines()
        super().close()


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [JsonHandler()]
    root.setLevel(level.upper())


def direct_handler(logger: logging.Logger) -> JsonHandler | None:
    """The JSON handler, when it alone would write what ``logger`` logs at INFO."""
    root = logging.getLogger()
    if logger.handlers or logger.filters or not logger.propagate or logger.parent is not root:
        return None
    handlers = root.handlers
    if len(handlers) != 1 or root.filters:
        return None
    handler = handlers[0]
    return handler if isinstance(handler, JsonHandler) and handler.level <= logging.INFO else None


def flush_access_lines() -> None:
    """Write the access lines still queued (the last tick's, when a service stops)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, JsonHandler):
            handler.flush_lines()


class JsonAccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, bytes, time, client, user, request id."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        principal = request.get(keys.principal)
        user = getattr(principal, "subject", None)
        method, path, status = request.method, request.path, response.status
        request_id = request.get(keys.request_id)
        ms, remote = round(time * 1000, 2), request.remote
        handler = direct_handler(self.logger)
        if handler is not None:
            handler.write_line(
                _access_line(self.logger.name, request_id, method, path, status, response.body_length, ms, remote, user)
            )
            return
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "bytes": response.body_length,
            "ms": ms,
            "remote": remote,
            "user": user,
        }
        self.logger.info("%s %s %s", method, path, status, extra={"fields": fields, "request_id": request_id})


def _access_line(
    logger: str,
    request_id: str | None,
    method: str,
    path: str,
    status: int,
    sent: int,
    ms: float,
    remote: str | None,
    user: str | None,
) -> str:
    """The line ``JsonFormatter`` would write for this access, without building a dict for
    ``json.dumps`` to walk: the keys are fixed, only the values are encoded, each by its type."""
    rid = f' "request_id": {_json(request_id)},' if request_id is not None else ""
    return (
        f'{{"ts": "{timestamp(_now())}", "level": "info", "logger": {_json(logger)},'
        f' "msg": {_json(f"{method} {path} {status}")},{rid} "method": {_json(method)},'
        f' "path": {_json(path)}, "status": {status}, "bytes": {sent}, "ms": {ms!r},'
        f' "remote": {_json(remote)}, "user": {_json(user)}}}\n'
    )


def _json(text: str | None) -> str:
    return "null" if text is None else _quote(text)


_quote = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str by default
_now = time.time
