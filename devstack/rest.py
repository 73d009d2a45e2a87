"""Blocking JSON calls to the services, as a user's script makes them (stdlib only, no proxy)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

# Loopback and compose networks are never reached through a proxy a developer has configured.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 60.0


class CallFailed(RuntimeError):
    """A call answered an unexpected status, or could not be made."""

    def __init__(self, method: str, url: str, status: int | None, message: str) -> None:
        self.status = status
        where = f"{method} {url}"
        super().__init__(f"{where}: {status} {message}" if status is not None else f"{where}: {message}")


def request(
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, Any]:
    """One call; answers (status, JSON or bytes) for every HTTP status, raises CallFailed when unreachable."""
    payload = json.dumps(body).encode() if body is not None else data
    req = urllib.request.Request(url, data=payload, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CallFailed(method, url, None, f"unreachable ({reason})") from None
    if "json" in ctype and raw:
        try:
            return status, json.loads(raw)
        except ValueError:
            pass
    return status, raw


def expect(
    statuses: tuple[int, ...], method: str, url: str, token: str | None = None, body: Any = None, **kwargs: Any
) -> Any:
    """The answer of a call that must end in one of ``statuses``; anything else raises CallFailed."""
    status, answer = request(method, url, token, body, **kwargs)
    if status not in statuses:
        raise CallFailed(method, url, status, error_message(answer))
    return answer


def error_message(answer: Any) -> str:
    """The message of either error shape (Artifactory's ``errors`` list, Distribution's flat body)."""
    if isinstance(answer, dict):
        if isinstance(answer.get("errors"), list):
            return "; ".join(str(e.get("message")) for e in answer["errors"] if isinstance(e, dict))
        if "message" in answer:
            return str(answer["message"])
    if isinstance(answer, bytes):
        return answer.decode("utf-8", "replace").strip()[:300] or "no details"
    return str(answer)[:300]
