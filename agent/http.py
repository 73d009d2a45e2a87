"""Plain HTTP for the agent (``urllib``): JSON calls to the control plane, with its refusals as exceptions.

TLS uses the system CA store, or the ``ca_file`` setting. Proxies come from the usual
``https_proxy``/``no_proxy`` environment, as for any command on the device.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MAX_ANSWER = 1 << 31  # the largest JSON answer read (a manifest of many files is large)


class ServerUnavailable(Exception):
    """No answer, or a 5xx: try again later, keep running what runs."""


class Refused(Exception):
    """A 4xx: the server read the call and said no; ``message`` is its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class CredentialRevoked(Refused):
    """401 on a device call: the credential is unknown or revoked; the agent stops."""


def error_message(body: bytes) -> str:
    """The reason in an error body: Artifactory's ``{"errors":[{"message"}]}`` or a flat ``{"message"}``."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500] or "no message"
    if isinstance(obj, dict):
        errors = obj.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict) and "message" in errors[0]:
            return str(errors[0]["message"])
        if "message" in obj:
            return str(obj["message"])
    return json.dumps(obj)[:500]


class Http:
    """One opener for every call the agent makes; ``open`` for streams, ``call`` for JSON."""

    def __init__(self, timeout: float, ca_file: Path | None = None) -> None:
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def open(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The response (status < 400) to read from; raises ``Refused``/``ServerUnavailable``."""
        request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                message = error_message(exc.read(64 * 1024))
            if exc.code >= 500:
                raise ServerUnavailable(f"{url} answered {exc.code}: {message}") from None
            raise (CredentialRevoked if exc.code == 401 else Refused)(exc.code, message) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbage
            raise ServerUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from None

    def call(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """A JSON call; answers the decoded JSON (None for an empty body)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        with self.open(method, url, all_headers, data) as resp:
            try:
                raw = resp.read(MAX_ANSWER)
            except OSError as exc:
                raise ServerUnavailable(f"{url}: the answer was cut off ({exc})") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerUnavailable(f"{url} answered something that is not JSON") from None
