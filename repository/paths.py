"""Request paths: percent-decoded here exactly once, then judged by the wire contract's rules.

Validation works on the *raw* request path, percent-decoded here exactly once and
strictly as UTF-8, so ``%2e%2e``, ``..%2f``, overlong UTF-8 and NUL are judged on
what they decode to, not on how they were spelled. What a safe name is, is decided in
``wire.paths``, which every node shares.

Every download splits its path, and the same hot paths come back request after request:
the answers for short raw paths are remembered (a pure function of the string, so never
stale), within a bound on entries and on their length, so memory stays flat whatever
clients send.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar
from urllib.parse import quote, unquote_to_bytes

from wire.errors import InvalidPath
from wire.paths import check_artifact_path, check_repo_key

T = TypeVar("T")


def decode_raw(raw: str) -> str:
    """Percent-decode a raw URL path once, refusing anything that is not clean UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("Invalid path: not valid UTF-8") from None


# Raw paths of up to this many characters have their split remembered, this many of them.
REMEMBERED_CHARS = 512
REMEMBERED_PATHS = 4096


def remembered(fn: Callable[[str], T]) -> Callable[[str], T]:
    """``fn`` of a string, remembered for short strings (``REMEMBERED_*``); ``fn`` must be pure.
    An exception it raises is not remembered: it is raised again each time."""
    cached = lru_cache(maxsize=REMEMBERED_PATHS)(fn)

    def call(raw: str) -> T:
        return cached(raw) if len(raw) <= REMEMBERED_CHARS else fn(raw)

    return call


def split_repo_path(raw_tail: str, *, allow_root: bool = True) -> tuple[str, str]:
    """``"repo/a/b%20c.bin"`` (raw) -> ``("repo", "a/b c.bin")``, both validated.

    A trailing slash names the folder itself, as Artifactory clients send it.
    """
    repo, path = _split(raw_tail)
    if not path and not allow_root:
        check_artifact_path(path, allow_empty=False)
    return repo, path


@remembered
def _split(raw_tail: str) -> tuple[str, str]:
    decoded = decode_raw(raw_tail)
    repo, _, path = decoded.partition("/")
    check_repo_key(repo)
    if path.endswith("/"):
        path = path[:-1]
    return repo, check_artifact_path(path, allow_empty=True)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def name_of(path: str) -> str:
    return path.rpartition("/")[2]


def ancestors(path: str) -> list[str]:
    """Every folder above ``path``, nearest last: ``a/b/c`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def url_quote(path: str) -> str:
    return quote(path, safe="/")
