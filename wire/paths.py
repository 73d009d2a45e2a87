"""Repo keys and artifact paths: the one place that decides what a safe name is.

A manifest's targets, a download URL and a deploy all name files by ``repo/path``; every
node judges those names by these rules, so a path one node accepts is one every node
can store and serve. The checks work on *decoded* text: percent-decoding a URL is the
server's business (``repository.paths``), done once before these rules apply.
"""

from __future__ import annotations

import re

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
