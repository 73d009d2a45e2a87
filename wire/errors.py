"""Errors of the wire contract, each carrying the HTTP status a server answers it with.

The contract is read by servers and by devices alike, so it cannot depend on either's
error classes. Servers map ``WireError`` once (their error middleware) to a JSON error
body with ``status``; a device reads ``message`` and decides for itself. The servers'
own errors derive from ``WireError`` too, so one base covers every error with a status.
"""

from __future__ import annotations

from collections.abc import Mapping


class WireError(Exception):
    """An error with its HTTP ``status``, a ``message`` for people, and headers for the answer."""

    status: int = 500
    default_message = "Internal error"

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers = dict(headers or {})
        super().__init__(self.message)


class InvalidInput(WireError):
    """Bytes or values that break the contract: a 400, the message saying where and why."""

    status = 400
    default_message = "Bad request"


class InvalidPath(InvalidInput):
    default_message = "Invalid path"
