"""Repo keys and artifact paths: the one place that decides what a safe name is.

Validation works on the *raw* request path, percent-decoded here exactly once and
strictly as UTF-8, so ``%2e%2e``, ``..%2f``, overlong UTF-8 and NUL are judged on
what they decode to, not on how they were spelled.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from .errors import InvalidPath

REPO_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_REPO_KEYS = frozenset({"api", "ui", "webapp", "list"})
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
# Unicode category Cc, exactly: C0 controls, DEL and C1 controls.
CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_repo_key(key: str) -> str:
    if not REPO_KEY_RE.fullmatch(key) or key.lower() in RESERVED_REPO_KEYS or key.endswith("."):
        raise InvalidPath(f"Invalid repository key: {key!r}")
    return key


def decode_raw(raw: str) -> str:
    """Percent-decode a raw URL path once, refusing anything that is not clean UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("Invalid path: not valid UTF-8") from None


def check_artifact_path(path: str, *, allow_empty: bool = False) -> str:
    """Validate a decoded path inside a repo (``a/b/c.bin``, no leading slash).

    Refused: absolute paths, empty, ``.`` or ``..`` segments, backslashes, control
    characters (NUL included), and overlong names. The empty path (the repo root)
    only where ``allow_empty``.
    """
    if path == "":
        if allow_empty:
            return path
        raise InvalidPath("Invalid path: empty")
    if path.startswith("/"):
        raise InvalidPath("Invalid path: absolute paths are not allowed")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidPath("Invalid path: too long")
    if "\\" in path:
        raise InvalidPath("Invalid path: backslash is not allowed")
    if CONTROL_RE.search(path):
        raise InvalidPath("Invalid path: control characters are not allowed")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath("Invalid path: empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidPath("Invalid path: a name is too long")
    return path


def split_repo_path(raw_tail: str, *, allow_root: bool = True) -> tuple[str, str]:
    """``"repo/a/b%20c.bin"`` (raw) -> ``("repo", "a/b c.bin")``, both validated.

    A trailing slash names the folder itself, as Artifactory clients send it.
    """
    decoded = decode_raw(raw_tail)
    repo, _, path = decoded.partition("/")
    check_repo_key(repo)
    if path.endswith("/"):
        path = path[:-1]
    return repo, check_artifact_path(path, allow_empty=allow_root)


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
