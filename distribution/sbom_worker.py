"""``python -m distribution.sbom_worker``: builds one bundle's SBOM in a process of its own.

The library holds the whole document as Python objects (some KiB a file) and spends a few
milliseconds of pure Python per file holding the GIL; in the service that would grow its
memory with every bundle's file count and stall its event loop. Here both end with the
process. The service writes, on standard input, one JSON line with the bundle (``name``,
``version``, ``created``, ``max_bytes``) and then one line per artifact in target order
(a manifest artifact's fields, and ``embedded``: the text of the CycloneDX document the file
holds, when it is named like one). The SBOM's bytes come back on standard output; a refusal
(over the cap, an embedded SBOM that cannot be read) exits with ``REFUSED`` and its message
on standard error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from cyclonedx.model.bom import Bom

from repository.errors import BadRequest
from wire.manifest import ArtifactFields, ManifestArtifact

from .sbom import BundleIdentity, build_sbom, parse_embedded

REFUSED = 3
ARTIFACT_FIELDS = tuple(ManifestArtifact.__dataclass_fields__)


def request_line(identity: BundleIdentity, max_bytes: int) -> bytes:
    """The first line the worker reads."""
    return _line(
        {"name": identity.name, "version": identity.version, "created": identity.created, "max_bytes": max_bytes}
    )


def artifact_line(artifact: ArtifactFields, embedded: bytes | None) -> bytes:
    """One artifact's line; ``embedded``: the bytes of the SBOM file it is, if it is named like one."""
    fields: dict[str, Any] = {name: getattr(artifact, name) for name in ARTIFACT_FIELDS}
    if embedded is not None:
        fields["embedded"] = embedded.decode("utf-8", "replace")
    return _line(fields)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def _artifacts(lines: Iterator[bytes], embedded: dict[str, Bom]) -> Iterator[ManifestArtifact]:
    for line in lines:
        fields = json.loads(line)
        artifact = ManifestArtifact(**{name: fields[name] for name in ARTIFACT_FIELDS})
        if "embedded" in fields:
            found = parse_embedded(artifact.target, fields["embedded"].encode("utf-8"))
            if found is not None:
                embedded[artifact.target] = found
        yield artifact


def run(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    lines = iter(stdin)
    head = json.loads(next(lines))
    identity = BundleIdentity(head["name"], head["version"], head["created"])
    embedded: dict[str, Bom] = {}
    artifacts = list(_artifacts(lines, embedded))
    stdout.write(build_sbom(identity, artifacts, embedded, head["max_bytes"]))
    stdout.flush()


def main() -> None:
    try:
        run(sys.stdin.buffer, sys.stdout.buffer)
    except BadRequest as exc:
        sys.stderr.write(exc.message)
        sys.exit(REFUSED)


if __name__ == "__main__":
    main()
