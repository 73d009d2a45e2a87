"""Reading canonical manifest bytes a page of artifacts at a time (``wire.manifest``'s form).

A manifest of 100,000 files is some 30 MB; decoded whole it is a Python object per file
and the text twice over. ``ManifestReader`` takes the bytes from a binary file in chunks
and yields the artifacts in pages, holding one page and a chunk of text at a time, with
every check ``decode`` makes: canonical bytes (each artifact's bytes equal its canonical
encoding, the rest equals the encoding of the manifest without its artifacts), targets
sorted and unique, no path both a file and a folder, at most ``MAX_ARTIFACTS``.

The canonical form sorts keys, so ``"artifacts"`` comes first and the header (name,
version, ...) last: it is known, and checked, only once every page has been read. A
caller keeps what it does with the pages provisional until ``summary`` is set.

This lives beside ``wire.manifest`` rather than inside it only to keep each module small;
the rules are that module's, imported from it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .jsonstrict import JsonRefused, loads_prefix
from .manifest import (
    MAX_ARTIFACTS,
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestArtifact,
    ManifestTooLarge,
    _artifact_from_json,
    _artifact_json,
    _canonical,
    _fail,
    decode,
)

PAGE = 1000
CHUNK = 1024 * 1024
START = '{"artifacts":['


@dataclass(frozen=True)
class ManifestSummary:
    """What a reader learnt once it reached the end: the manifest without its artifacts, how
    many artifacts there were and their total size."""

    header: Manifest
    files: int
    bytes: int


class _FolderCheck:
    """No target inside another target (a path both a file and a folder). Targets come sorted,
    so a target's folders, being its string prefixes, come before it, and every target between
    a folder and it starts with that folder too: a stack of the targets that are prefixes of
    the last one is all the memory this needs."""

    def __init__(self) -> None:
        self._chain: list[str] = []

    def add(self, target: str, where: str) -> None:
        while self._chain and not target.startswith(self._chain[-1]):
            self._chain.pop()
        for earlier in self._chain:
            if target[len(earlier)] == "/":
                _fail(where, f"{target!r} is inside file {earlier!r}")
        self._chain.append(target)


class ManifestReader:
    """Canonical manifest bytes from ``stream``, read ``chunk`` bytes at a time."""

    def __init__(self, stream: BinaryIO, *, page: int = PAGE, chunk: int = CHUNK) -> None:
        self._stream = stream
        self._page = page
        self._chunk = chunk
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._text = ""
        self._read = 0
        self._eof = False
        self.summary: ManifestSummary | None = None

    def _more(self, at_least: int = 0) -> bool:
        """Add a chunk (or ``at_least`` bytes) of text to the buffer; False at the end of the bytes."""
        if self._eof:
            return False
        data = self._stream.read(max(self._chunk, at_least))
        self._read += len(data)
        if self._read > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge()
        try:
            self._text += self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            _fail("JSON", f"not valid UTF-8 near byte {self._read - len(data) + exc.start}")
        self._eof = not data
        return True

    def _value(self, pos: int, where: str) -> tuple[object, int]:
        """The JSON value at ``pos``, reading on while the text so far ends inside it."""
        while True:
            try:
                return loads_prefix(self._text, pos, floats=False)
            except JsonRefused as exc:
                # a syntax error may only mean the value goes on past the buffer: read on (twice as
                # much each time, so a long value costs linear time); anything else is final
                if not exc.syntax or not self._more(len(self._text)):
                    _fail(where, exc.problem)

    def _char(self, pos: int) -> str:
        while pos >= len(self._text) and self._more():
            pass
        return self._text[pos : pos + 1]

    def pages(self) -> Iterator[list[ManifestArtifact]]:
        """The artifacts in order, ``page`` at a time; ``summary`` is set once they are all read and
        the header checked. Raises ``ManifestError`` (400) or ``ManifestTooLarge`` (413)."""
        while len(self._text) < len(START) and self._more():
            pass
        if not self._text.startswith(START):
            _fail("bytes", f"not in canonical form: a manifest starts with {START}")
        pos, count, size, previous = len(START), 0, 0, ""
        folders, page = _FolderCheck(), []
        if self._char(pos) == "]":
            pos += 1
        else:
            while True:
                where = f"artifacts[{count}]"
                if count == MAX_ARTIFACTS:
                    _fail("artifacts", f"more than {MAX_ARTIFACTS} artifacts")
                obj, end = self._value(pos, where)
                artifact = _artifact_from_json(obj, where)
                if _canonical(_artifact_json(artifact)) != self._text[pos:end].encode("utf-8"):
                    _fail(where, "not in canonical form (sorted keys, no whitespace, properties sorted)")
                if count and artifact.target <= previous:
                    problem = "duplicate target" if artifact.target == previous else "not sorted by target"
                    _fail(f"{where}.target", f"{problem} ({artifact.target!r})")
                folders.add(artifact.target, f"{where}.target")
                previous, count, size = artifact.target, count + 1, size + artifact.size
                page.append(artifact)
                separator, pos = self._char(end), end + 1
                if len(page) == self._page:
                    yield page
                    page = []
                if separator == "]":
                    break
                if separator != ",":
                    _fail(f"{where}", "not in canonical form: expected ',' or ']' after it")
                if pos > self._chunk:  # drop what is read, now and then (a slice copies the buffer)
                    self._text, pos = self._text[pos:], 0
        while self._more():
            pass
        header = decode(('{"artifacts":[]' + self._text[pos:]).encode("utf-8"))
        if page:
            yield page
        self.summary = ManifestSummary(header, count, size)
