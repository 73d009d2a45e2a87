"""JSON-lines logs for both services, so log shippers need no parsing rules.

Every line written while a request is handled carries that request's ``request_id``
(the ``X-Request-ID`` it answers, see ``repository.http.request_ids``): the id lives in
a context variable for the request's task, and a filter on the handler copies it onto
each record. The access log line, written once the request's task is done, reads it
from the request itself.

Access lines are the one log line every request writes, so they skip the ``logging``
machinery (a record, a caller lookup, a filter, a formatter, a flush per line) when the
JSON handler ``setup_logging`` installs is the only place they would go: a request leaves only
its fields (an ``AccessEntry``), and the entries of up to ``LINES_DELAY`` seconds are formatted
together, in the same shape, and reach the stream in one write. Formatted in one run, the lines
find the formatter's code and data in the CPU's caches: a line formatted between two requests
(its path decoded, its user named, its text built) cost a small download some 7 µs more. Under
any other configuration they go through ``logging`` as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from yarl import URL

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
    """``2026-11-22T10:00:00.123Z``: formatted once per millisecond, as lines come many to a
    millisecond under load, and the part up to the second once per second."""
    global _last
    second = int(created)
    milli = int((created - second) * 1000)
    last = _last  # one tuple, read once: threads that log may replace it meanwhile
    if last[1] == milli and last[0] == second:
        return last[2]
    prefix = last[3] if last[0] == second else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    text = f"{prefix}.{milli:03d}Z"
    _last = (second, milli, text, prefix)
    return text


# (second, millisecond, its timestamp, the timestamp's part up to the second)
_last: tuple[int, int, str, str] = (-1, -1, "", "")


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


# Access lines wait at most this long, and at most this many, to be written together: a write
# per event-loop tick cost a small download some 2 µs (one line or two per tick under load).
LINES_DELAY = 0.05
LINES_MAX = 256

# An access line's fields (``_access_lines``): the access logger's encoded name, the request id, the
# method, the URL (whose path is decoded when the line is written), status, bytes sent, seconds
# taken, client, the caller (a ``Principal``, named when the line is written; None for none) and
# when (epoch seconds).
AccessEntry = tuple[str, str | None, str, URL, int, int, float, str | None, Any, float]


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The services' one log handler: JSON lines on stderr, plus the access lines written
    directly (``queue_access``), batched for up to ``LINES_DELAY`` seconds or ``LINES_MAX`` lines.
    Any other record is written after the access lines queued before it, so lines keep their order."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self._lines: list[AccessEntry] = []
        self._due: asyncio.TimerHandle | None = None
        self._lines_thread = 0  # the event loop's thread, where lines are queued

    def queue_access(self, entry: AccessEntry) -> None:
        """Queue an access line's fields, written with the others of the next ``LINES_DELAY`` seconds."""
        lines = self._lines
        lines.append(entry)
        if len(lines) == 1:
            self._due = asyncio.get_running_loop().call_later(LINES_DELAY, self.flush_lines)
            self._lines_thread = threading.get_ident()
        elif len(lines) >= LINES_MAX:
            self.flush_lines()

    def emit(self, record: logging.LogRecord) -> None:
        if self._lines and threading.get_ident() == self._lines_thread:  # (the queue is the loop's alone)
            self.flush_lines()
        super().emit(record)

    def flush_lines(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        with self.lock:  # type: ignore[union-attr]
            try:
                stream = self.stream
                stream.write(_access_lines(lines))
                stream.flush()  # what ``self.flush()`` does, without taking the lock again
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
    """The JSON handler, when it alone would write what ``logger`` logs at INFO (asked for
    every line: a test or an operator may reconfigure logging while connections are open)."""
    root = logging.root  # what ``logging.getLogger()`` answers, without the call
    if logger.parent is not root or logger.handlers or logger.filters or not logger.propagate:
        return None
    handlers = root.handlers
    if len(handlers) != 1 or root.filters:
        return None
    handler = handlers[0]
    return handler if isinstance(handler, JsonHandler) and handler.level <= logging.INFO else None


def flush_access_lines() -> None:
    """Write the access lines still queued (the last ones, when a service stops)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, JsonHandler):
            handler.flush_lines()


class JsonAccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, bytes, time, client, user, request id."""

    __slots__ = ("_name",)

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._name = _quote(logger.name)  # encoded once: aiohttp makes one access logger per connection

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        principal, request_id = request.get(keys.principal), request.get(keys.request_id)
        handler = direct_handler(self.logger)
        if handler is not None:  # the fields only: the line is made with its batch's
            handler.queue_access(
                (self._name, request_id, request.method, request.rel_url, response.status, response.body_length,
                 time, request.remote, principal, _now())
            )  # fmt: skip
            return
        method, path, status = request.method, request.path, response.status
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 2),
            "remote": request.remote,
            "user": getattr(principal, "subject", None),
        }
        self.logger.info("%s %s %s", method, path, status, extra={"fields": fields, "request_id": request_id})


def _access_lines(entries: list[AccessEntry]) -> str:
    """The lines ``JsonFormatter`` would write for these accesses, without building a dict for
    ``json.dumps`` to walk: the keys are fixed, only the values are encoded, each by its type.
    What the accesses of one file by one client share (all but the time, the request id and the
    duration) is encoded once per batch: a burst asks for the same files over and over."""
    shared: dict[tuple[Any, ...], tuple[str, str, str]] = {}
    lines = []
    for logger, request_id, method, url, status, sent, seconds, remote, principal, created in entries:
        user = getattr(principal, "subject", None)
        key = (logger, method, url, status, sent, remote, user)
        parts = shared.get(key)
        if parts is None:
            parts = shared[key] = _shared_parts(logger, method, url.path, status, sent, remote, user)
        head, middle, tail = parts
        rid = "" if request_id is None else f' "request_id": {_quote(request_id)},'
        lines.append(f'{{"ts": "{timestamp(created)}{head}{rid}{middle}{millis(seconds)}{tail}')
    return "".join(lines)


def _shared_parts(
    logger: str, method: str, path: str, status: int, sent: int, remote: str | None, user: str | None
) -> tuple[str, str, str]:
    """An access line's text around its request id and its duration (``logger``: its name, encoded)."""
    msg = _quote(f"{method} {path} {status}")
    client, caller = ("null" if text is None else _quote(text) for text in (remote, user))
    return (
        f'", "level": "info", "logger": {logger}, "msg": {msg},',
        f' "method": {_quote(method)}, "path": {_quote(path)}, "status": {status}, "bytes": {sent}, "ms": ',
        f', "remote": {client}, "user": {caller}}}\n',
    )


def millis(seconds: float) -> str:
    """``repr(round(seconds * 1000, 2))``, the ``ms`` that logging writes, a third cheaper. Both
    round the same double correctly to 2 decimals; below 10**13 ms, those digits without their
    trailing zeros are the shortest that read back as the rounded float, which is what repr writes."""
    text = f"{seconds * 1000:.2f}".rstrip("0")
    return text + "0" if text[-1] == "." else text


_quote = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str by default
_now = time.time
