"""The runtime sensor: which processes run, what their executables (and scripts) hash to.

A scan lists processes (psutil), hashes each executable through ``HashCache`` (keyed by
the file's device, inode, size and mtime, so an unchanged binary is never hashed twice and
one replaced in place is hashed again), and finds the script a known interpreter runs. A
process that runs a deleted or replaced binary is hashed through ``/proc/PID/exe``: the bytes
that run, not the file now at that path. ``Sensor`` (``agent/sensor_loop.py``) sends what
changed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import psutil

from wire.runtime import MAX_PATH, MAX_PROCESSES, Process, RuntimeSettings, cut_cmdline

HASH_CHUNK = 1 << 20
CONTAINER_RE = re.compile(r"([0-9a-f]{64})")
# interpreters by name, with the options that take a value (skipped with it before the script)
_PYTHON = re.compile(r"python[0-9.]*")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash"}
_OTHERS = {"node": {"-r", "--require"}, "nodejs": {"-r", "--require"}, "perl": {"-I", "-M"}, "ruby": {"-I", "-r"}}
_PYTHON_VALUE_OPTIONS = {"-W", "-X", "-Q"}
# A process's own descriptors by the names it may run them as.
_OWN_FD = re.compile(r"/dev/fd/([0-9]+)|/dev/(stdin|stdout|stderr)")
_STDIO = {"stdin": "0", "stdout": "1", "stderr": "2"}
_OWN_PROC = re.compile(r"/proc/(?:self|thread-self)/")


@dataclass(frozen=True)
class ProcInfo:
    """What the process table says of one process, before hashing. ``exe_open`` is what is read
    for the executable's bytes (``/proc/PID/exe`` in the live table: what runs, even deleted);
    ``proc`` is the directory through which the process's own paths are read (``/proc/PID``;
    ``""`` in a synthetic table, whose paths are read as they are)."""

    pid: int
    started: int  # ms
    exe: str
    cmdline: tuple[str, ...]
    user: str
    exe_open: str
    proc: str = ""


class HashCache:
    """sha256 of files by (st_dev, st_ino, size, mtime_ns), the ``entries`` used last kept."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._known: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self.hashed = 0  # files read, for the bench and the tests

    def sha256(self, path: str) -> str | None:
        """The file's sha256, or None when it cannot be read or is no regular file.

        Opened without blocking and checked before a byte is read: a "script" that is a FIFO,
        a terminal or a device (``bash /dev/fd/63``, ``python /dev/stdin``) would block the
        sensor forever, or steal the bytes the process itself waits for."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return None
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                found = self._known.get(key)
                if found is not None:
                    self._known.move_to_end(key)
                    return found
                digest = hashlib.sha256()
                while chunk := f.read(HASH_CHUNK):
                    digest.update(chunk)
        except OSError:
            return None
        self.hashed += 1
        self._known[key] = found = digest.hexdigest()
        if len(self._known) > self.entries:
            self._known.popitem(last=False)
        return found


def script_of(exe: str, cmdline: tuple[str, ...]) -> str | None:
    """The file a known interpreter runs: ``python app.py``, ``sh start.sh``, ``node x.js``,
    ``java -jar x.jar``; None for anything else (``python -m mod``, ``sh -c '...'``)."""
    name = os.path.basename(exe)
    args = list(cmdline[1:])
    if name == "java":
        return args[args.index("-jar") + 1] if "-jar" in args[:-1] else None
    if _PYTHON.fullmatch(name):
        value_options, stop = _PYTHON_VALUE_OPTIONS, {"-m", "-c", "-"}
    elif name in _SHELLS:
        value_options, stop = {"-o", "+o"}, {"-c", "-s", "-"}
    elif name in _OTHERS:
        value_options, stop = _OTHERS[name], {"-e", "-E", "--eval", "-p", "--print", "-"}
    else:
        return None
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in stop:
            return None
        elif arg in value_options:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def container_of(pid: int) -> str | None:
    """The container id in ``/proc/PID/cgroup`` (docker, containerd, podman, CRI-O), if any."""
    try:
        return container_in(Path(f"/proc/{pid}/cgroup").read_text("utf-8", "replace"))
    except OSError:
        return None


def container_in(cgroup: str) -> str | None:
    """The 64-hex-digit container id in a cgroup file's text (``/docker/<id>``,
    ``docker-<id>.scope``, ``cri-containerd-<id>.scope``, ``libpod-<id>``), if any."""
    found = CONTAINER_RE.search(cgroup)
    return found.group(1) if found else None


def live_processes() -> Iterator[ProcInfo]:
    """This device's process table; kernel threads and processes that vanished are left out."""
    for proc in psutil.process_iter(["pid", "exe", "cmdline", "username", "create_time"]):
        info = proc.info
        exe = info.get("exe")
        if not exe:
            continue
        pid = info["pid"]
        yield ProcInfo(
            pid=pid,
            started=int((info.get("create_time") or 0) * 1000),
            exe=exe,
            cmdline=tuple(info.get("cmdline") or ()),
            user=info.get("username") or "",
            exe_open=f"/proc/{pid}/exe",
            proc=f"/proc/{pid}",
        )


def opened_as(info: ProcInfo, path: str) -> str:
    """Where this agent reads what ``path`` names for the process ``info``: the same words mean
    another file here. A relative path is read from the process's working directory, an
    absolute one below its root (a container's files, not the host's), and its own descriptors
    (``bash /dev/fd/3``, ``/proc/self/fd/3``, ``/dev/stdin``) through ``/proc/PID/fd``: read
    as they are, they would name this agent's own open files."""
    if not info.proc:
        return path
    if fd := _OWN_FD.fullmatch(path):
        return f"{info.proc}/fd/{fd.group(1) or _STDIO[fd.group(2)]}"
    if own := _OWN_PROC.match(path):
        return f"{info.proc}/{path[own.end() :]}"
    return f"{info.proc}/root{path}" if os.path.isabs(path) else f"{info.proc}/cwd/{path}"


class Scanner:
    """Turns a process table into reported ``Process``es under a group's settings."""

    def __init__(self, cache: HashCache, *, containers: bool = True) -> None:
        self.cache = cache
        self.containers = containers

    def scan(self, table: Iterable[ProcInfo], settings: RuntimeSettings) -> tuple[dict[tuple[int, int], Process], bool]:
        """The processes by key, at most ``MAX_PROCESSES`` (lowest pids first), and whether some were left out."""
        kept = sorted((p for p in table if not _excluded(p.exe, settings.exclude)), key=lambda p: p.pid)
        out = {}
        for info in kept[:MAX_PROCESSES]:
            process = self.process(info, settings.drop_cmdline)
            out[process.key] = process
        return out, len(kept) > MAX_PROCESSES

    def process(self, info: ProcInfo, drop_cmdline: bool) -> Process:
        script = script_of(info.exe, info.cmdline)
        script_sha = None
        if script is not None:
            script_sha = self.cache.sha256(opened_as(info, script))
        return Process(
            pid=info.pid,
            started=info.started,
            exe=_path(info.exe),
            sha256=self.cache.sha256(info.exe_open),
            user=info.user[:128],
            script=None if script is None else _path(script),
            script_sha256=script_sha,
            container=container_of(info.pid) if self.containers else None,
            cmdline=None if drop_cmdline else cut_cmdline(" ".join(info.cmdline)),
        )


def _path(path: str) -> str:
    return cut_cmdline(path)[:MAX_PATH] or "?"


def _excluded(exe: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(exe, p) or fnmatchcase(os.path.basename(exe), p) for p in patterns)
