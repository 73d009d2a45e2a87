"""A smart remote repository's configuration, in Artifactory's names, and its checks.

The body a client PUTs or POSTs to ``/artifactory/api/repositories/{key}`` with
``"rclass": "remote"`` is checked whole here before anything is stored: an unknown
field, a URL that is not http(s) or names no upstream repo, a negative period or a
wrong type is a 400 naming the field. Credentials are kept but never answered back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from repository.errors import BadRequest
from repository.http.repos_api import check_repository_body
from wire.paths import check_repo_key

MASK = "************"
DEFAULT_RETRIEVAL_CACHE_SECS = 7200
DEFAULT_MISSED_CACHE_SECS = 1800
DEFAULT_SOCKET_TIMEOUT_MS = 15000
MAX_PERIOD_SECS = 10 * 365 * 24 * 3600
MAX_SOCKET_TIMEOUT_MS = 3_600_000
_TOP = {
    "key", "rclass", "packageType", "description", "anonymousRead", "url", "username", "password",
    "accessToken", "offline", "retrievalCachePeriodSecs", "missedRetrievalCachePeriodSecs",
    "socketTimeoutMillis", "contentSynchronisation",
}  # fmt: skip
_SYNC = {"enabled", "statistics", "source"}
# The fields only a remote repo has.
REMOTE_FIELDS = frozenset(_TOP - {"key", "rclass", "packageType", "description", "anonymousRead"})


@dataclass(frozen=True)
class ContentSync:
    """``contentSynchronisation``: the smart remote's behaviour."""

    enabled: bool = False
    statistics: bool = False  # report cached-hit downloads to the upstream
    origin_absence_detection: bool = False  # drop cached files the upstream no longer has


@dataclass(frozen=True)
class RemoteConfig:
    key: str
    url: str  # the upstream repo: http(s)://host[:port]/.../artifactory/{repo}
    description: str = ""
    anonymous_read: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    offline: bool = False
    retrieval_cache_secs: int = DEFAULT_RETRIEVAL_CACHE_SECS
    missed_cache_secs: int = DEFAULT_MISSED_CACHE_SECS
    socket_timeout_ms: int = DEFAULT_SOCKET_TIMEOUT_MS
    sync: ContentSync = field(default_factory=ContentSync)

    @property
    def base_url(self) -> str:
        """The upstream's Artifactory base (everything before the repo key)."""
        return self.url.rsplit("/", 1)[0]

    @property
    def upstream_repo(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def stored(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_stored(cls, text: str) -> RemoteConfig:
        values = json.loads(text)
        values["sync"] = ContentSync(**values["sync"])
        return cls(**values)

    def answer(self) -> dict[str, Any]:
        """The configuration as GET answers it: credentials masked, never sent back."""
        return {
            "key": self.key,
            "rclass": "remote",
            "packageType": "generic",
            "description": self.description,
            "repoLayoutRef": "simple-default",
            "anonymousRead": self.anonymous_read,
            "url": self.url,
            "username": self.username,
            "password": MASK if self.password else "",
            "accessToken": MASK if self.access_token else "",
            "offline": self.offline,
            "retrievalCachePeriodSecs": self.retrieval_cache_secs,
            "missedRetrievalCachePeriodSecs": self.missed_cache_secs,
            "socketTimeoutMillis": self.socket_timeout_ms,
            "contentSynchronisation": {
                "enabled": self.sync.enabled,
                "statistics": {"enabled": self.sync.statistics},
                "source": {"originAbsenceDetection": self.sync.origin_absence_detection},
            },
        }


def parse_remote_config(key: str, body: dict[str, Any], previous: RemoteConfig | None = None) -> RemoteConfig:
    """The configuration ``body`` asks for; a POST (``previous`` set) changes only the fields it names.

    A masked password or token sent back unchanged (what GET answered) keeps the stored one.
    """
    check_repository_body(check_repo_key(key), body, _TOP)
    if previous is None and "url" not in body:
        raise BadRequest("'url' is required for a remote repository")
    base = previous or RemoteConfig(key=key, url=_url(body["url"]))
    changes: dict[str, Any] = {}
    for name, attr in (("description", "description"), ("username", "username")):
        if name in body:
            changes[attr] = _string(body, name, 1024)
    for name, attr in (("password", "password"), ("accessToken", "access_token")):
        if name in body and body[name] != MASK:
            changes[attr] = _string(body, name, 4096)
    for name, attr in (("anonymousRead", "anonymous_read"), ("offline", "offline")):
        if name in body:
            changes[attr] = _bool(body, name)
    if "url" in body:
        changes["url"] = _url(body["url"])
    for name, attr, top in (
        ("retrievalCachePeriodSecs", "retrieval_cache_secs", MAX_PERIOD_SECS),
        ("missedRetrievalCachePeriodSecs", "missed_cache_secs", MAX_PERIOD_SECS),
        ("socketTimeoutMillis", "socket_timeout_ms", MAX_SOCKET_TIMEOUT_MS),
    ):
        if name in body:
            changes[attr] = _int(body, name, 1 if attr == "socket_timeout_ms" else 0, top)
    if "contentSynchronisation" in body:
        changes["sync"] = _sync(body["contentSynchronisation"], base.sync)
    return replace(base, **changes)


def _url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise BadRequest("'url' must be a string of at most 2048 characters")
    parts = urlsplit(value.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("'url' must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 (read for its check: a port beyond 65535 raises)
    except ValueError:
        raise BadRequest("'url' has a port that is not a number from 0 to 65535") from None
    if parts.query or parts.fragment or parts.username or parts.password:
        raise BadRequest("'url' must carry no query, fragment or credentials (use 'username' and 'password')")
    segments = parts.path.split("/")
    if len(segments) < 2:
        raise BadRequest("'url' must name the upstream repository, e.g. http://host:8082/artifactory/releases-local")
    try:
        check_repo_key(segments[-1])
    except Exception:
        raise BadRequest("'url' must end with the upstream repository's key") from None
    return value.rstrip("/")


def _string(body: dict[str, Any], name: str, limit: int) -> str:
    value = body[name]
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise BadRequest(f"'{name}' must be a string of at most {limit} printable characters")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a whole number from {low} to {high}")
    return value


def _sync(value: Any, previous: ContentSync) -> ContentSync:
    if not isinstance(value, dict) or set(value) - _SYNC:
        raise BadRequest(f"'contentSynchronisation' must be an object with at most {', '.join(sorted(_SYNC))}")
    enabled = _bool(value, "enabled") if "enabled" in value else previous.enabled
    statistics = _flag(value, "statistics", "enabled", previous.statistics)
    absence = _flag(value, "source", "originAbsenceDetection", previous.origin_absence_detection)
    return ContentSync(enabled, statistics, absence)


def _flag(block: dict[str, Any], name: str, inner: str, previous: bool) -> bool:
    if name not in block:
        return previous
    value = block[name]
    if not isinstance(value, dict) or set(value) - {inner}:
        raise BadRequest(f"'contentSynchronisation.{name}' must be an object with at most '{inner}'")
    return _bool(value, inner) if inner in value else previous
