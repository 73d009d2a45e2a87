"""Local durability, observed in the system calls a blob's publication makes (THREATS: "temp file in
the same directory, fsync, os.replace, fsync of the directory").

A crash cannot be staged at every instant, but the order of calls that makes a blob whole or absent
after one can be watched: the blob store runs under ``strace`` and every way a blob reaches it (a
streamed writer, an adopted staged upload, a batch of small blobs) must write its bytes to a temp
file on the same filesystem, fsync that file, rename it into place, then fsync the directory that
now names it, and every directory it created for it. A ``syncfs`` of the store's filesystem (which
the batch of small blobs uses, one call for the whole batch) counts for every file and directory on
it: it makes all of them durable at once. A batch makes its names durable with the store's
``sync()``, which an edge's commit calls before its entries name any blob.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from storage_backends.local import LocalBackend

    async def main(root, staged):
        store = LocalBackend(Path(root))
        await store.open()
        print("BEGIN", flush=True)
        async with await store.writer() as w:
            await w.write(b"streamed " * 1000)
            await w.commit()
        assert await store.adopt(Path(staged), sys.argv[3], Path(staged).stat().st_size)
        await store.write_many([(sys.argv[4 + i], [f"small {i}".encode()]) for i in range(3)])
        await store.sync()  # as an edge's commit does before any entry names the blobs
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)

CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"^(\d+)<([^>]*)>")


@dataclass
class Trace:
    """The calls that matter, in order: (call, path) with paths resolved from ``strace -y``."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # (call, path, second path)

    def index(self, call: str, path: str, second: str = "") -> int:
        for i, (c, p, s) in enumerate(self.events):
            if c == call and p == path and (not second or s == second):
                return i
        raise AssertionError(f"no {call}({path}{', ' + second if second else ''}) in the trace")

    def made_durable(self, path: str, root: Path) -> list[int]:
        """Where ``path`` was made durable: an fsync of it, or a syncfs of the store's filesystem."""
        return [
            i
            for i, (c, p, _) in enumerate(self.events)
            if (c in ("fsync", "fdatasync") and p == path) or (c == "syncfs" and p.startswith(str(root)))
        ]

    def last_write_to(self, path: str) -> int:
        found = [i for i, (c, p, _) in enumerate(self.events) if c in ("write", "writev", "pwrite64") and p == path]
        assert found, f"nothing written to {path}"
        return found[-1]


def parse(text: str) -> Trace:
    trace = Trace()
    started = False
    for line in text.splitlines():
        if "write(1<" in line and "BEGIN" in line:
            started = True
            continue
        match = CALL.match(line)
        if not started or not match or int(match.group(4)) < 0:
            continue
        call, args = match.group(2), match.group(3)
        if call in ("fsync", "fdatasync", "syncfs", "write", "writev", "pwrite64"):
            fd = FD_PATH.match(args)
            if fd:
                trace.events.append((call, fd.group(2), ""))
        elif call in ("rename", "renameat", "renameat2"):
            paths = re.findall(r'"([^"]*)"', args)
            if len(paths) >= 2:
                trace.events.append(("rename", paths[0], paths[1]))
        elif call == "mkdir" or call == "mkdirat":
            (path,) = re.findall(r'"([^"]*)"', args)[:1]
            trace.events.append(("mkdir", path, ""))
    return trace


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trace, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("store")
    staged_dir = root / "staging"  # same filesystem, as an edge's staging is
    staged_dir.mkdir()
    staged = staged_dir / "blob.part"
    staged.write_bytes(b"adopted " * 5000)
    smalls = [f"small {i}".encode() for i in range(3)]
    shas = {
        "streamed": hashlib.sha256(b"streamed " * 1000).hexdigest(),
        "adopted": hashlib.sha256(staged.read_bytes()).hexdigest(),
        **{f"small {i}": hashlib.sha256(s).hexdigest() for i, s in enumerate(smalls)},
    }
    out = root / "trace.txt"
    command = [
        "strace", "-f", "-y", "-qq", "-s", "200", "-o", str(out),
        "-e", "trace=write,writev,pwrite64,fsync,fdatasync,syncfs,rename,renameat,renameat2,mkdir,mkdirat",
        sys.executable, "-c", SCRIPT, str(root), str(staged), shas["adopted"],
        *(shas[f"small {i}"] for i in range(3)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    return parse(out.read_text()), root, shas


def blob_path(root: Path, sha: str) -> str:
    return str(root / "blobs" / sha[:2] / sha)


@pytest.mark.parametrize("blob", ["streamed", "adopted", "small 0", "small 1", "small 2"])
def test_a_blob_is_fsynced_before_its_rename_and_its_directories_after(
    traced: tuple[Trace, Path, dict[str, str]], blob: str
) -> None:
    trace, root, shas = traced
    final = blob_path(root, shas[blob])
    renames = [(p, s) for c, p, s in trace.events if c == "rename" and s == final]
    assert len(renames) == 1, f"{blob} reaches its name by exactly one rename: {renames}"
    temp = renames[0][0]
    assert Path(temp).parent != Path(final).parent or temp != final
    assert str(root) in temp, "the temp file sits on the store's own filesystem, so the rename is atomic"
    rename = trace.index("rename", temp, final)
    written = trace.last_write_to(temp) if blob != "adopted" else -1  # an adopted file was written before the trace
    assert any(written < i < rename for i in trace.made_durable(temp, root)), (
        "the file's bytes, all of them written, are durable before its name is"
    )
    parent = str(Path(final).parent)
    assert any(i > rename for i in trace.made_durable(parent, root)), (
        "the directory holding the new name is made durable after the rename"
    )


def test_every_directory_made_for_a_blob_is_fsynced_in_its_parent(traced: tuple[Trace, Path, dict[str, str]]) -> None:
    trace, root, _ = traced
    made = [p for c, p, _ in trace.events if c == "mkdir" and "/blobs/" in p]
    assert made, "the traced blobs needed new shard directories"
    for directory in made:
        mkdir = trace.index("mkdir", directory)
        parent = str(Path(directory).parent)
        assert any(i > mkdir for i in trace.made_durable(parent, root)), (
            f"{parent} is made durable after {directory} was made in it"
        )
