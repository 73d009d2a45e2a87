"""The agent's runtime sensor on this machine's real processes: hashes cached by file identity,
scripts behind interpreters, exclusions and dropped command lines; and drift of installed files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apps import AppRegistry
from agent.drift import DriftChecker, keep_manifest
from agent.installer import Installer
from agent.runtime import HashCache, ProcInfo, Scanner, container_in, live_processes, opened_as, script_of
from tests.agent_plane import make_bundle
from tests.gpg_keys import KeyFactory, KeySet
from wire.fleet import AppSpec
from wire.runtime import MAX_PROCESSES, RuntimeSettings

SLEEP = shutil.which("sleep") or "/bin/sleep"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(name="spawn")
def spawn_fixture() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def scan_pid(pid: int, settings: RuntimeSettings = RuntimeSettings(), cache: HashCache | None = None):  # noqa: B008
    found, _ = Scanner(cache or HashCache(64)).scan(live_processes(), settings)
    return next((p for p in found.values() if p.pid == pid), None)


def scan_script(pid: int) -> Any:
    """The process once its interpreter's command line is in place (it is exec'd after the fork)."""
    found = None
    for _ in range(50):
        found = scan_pid(pid)
        if found is not None and found.script:
            break
    return found


def test_an_unchanged_file_is_hashed_once_and_one_replaced_in_place_again(tmp_path: Path) -> None:
    path = tmp_path / "tool"
    path.write_bytes(b"one")
    cache = HashCache(16)
    assert cache.sha256(str(path)) == cache.sha256(str(path)) == hashlib.sha256(b"one").hexdigest()
    assert cache.hashed == 1
    path.write_bytes(b"two")  # same inode, other size and mtime
    os.utime(path, ns=(1, 1))
    assert cache.sha256(str(path)) == hashlib.sha256(b"two").hexdigest()
    assert cache.hashed == 2


def test_the_hash_cache_keeps_only_its_most_recently_used_entries(tmp_path: Path) -> None:
    cache = HashCache(16)
    files = []
    for n in range(17):
        files.append(tmp_path / f"f{n}")
        files[-1].write_bytes(str(n).encode())
        cache.sha256(str(files[-1]))
    assert cache.hashed == 17
    cache.sha256(str(files[-1]))  # still kept
    assert cache.hashed == 17
    cache.sha256(str(files[0]))  # the oldest was dropped
    assert cache.hashed == 18


def test_a_fifo_or_device_named_as_a_script_is_not_read(tmp_path: Path) -> None:
    """``bash /dev/fd/63`` or a FIFO: opening one to read would block the sensor (nobody
    writes) or take bytes from the process that waits for them."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cache = HashCache(16)
    assert cache.sha256(str(fifo)) is None
    assert cache.sha256("/dev/zero") is None  # endless: never hashed
    assert cache.hashed == 0


def test_an_unreadable_file_has_no_hash(tmp_path: Path) -> None:
    assert HashCache(16).sha256(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("exe", "cmdline", "script"),
    [
        ("/usr/bin/python3.11", ("python3", "-u", "app.py", "--port", "1"), "app.py"),
        ("/usr/bin/python3", ("python3", "-W", "ignore", "/srv/x.py"), "/srv/x.py"),
        ("/usr/bin/python3", ("python3", "-m", "http.server"), None),
        ("/usr/bin/python3", ("python3", "-c", "print(1)"), None),
        ("/bin/sh", ("sh", "start.sh"), "start.sh"),
        ("/bin/bash", ("bash", "-e", "-o", "pipefail", "run.sh"), "run.sh"),
        ("/bin/bash", ("bash", "-c", "echo hi"), None),
        ("/usr/bin/node", ("node", "--require", "x", "server.js"), "server.js"),
        ("/usr/bin/perl", ("perl", "-w", "tool.pl"), "tool.pl"),
        ("/usr/bin/ruby", ("ruby", "app.rb"), "app.rb"),
        ("/usr/bin/java", ("java", "-Xmx1g", "-jar", "till.jar"), "till.jar"),
        ("/usr/bin/java", ("java", "-cp", "x", "Main"), None),
        ("/usr/bin/sleep", ("sleep", "100"), None),
        ("/usr/bin/python3", ("python3",), None),
    ],
)
def test_the_script_a_known_interpreter_runs_is_found(exe: str, cmdline: tuple[str, ...], script: str | None) -> None:
    assert script_of(exe, cmdline) == script


def test_a_container_id_is_read_from_the_cgroup_where_there_is_one() -> None:
    cid = "0123456789abcdef" * 4
    assert container_in(f"0::/system.slice/docker-{cid}.scope\n") == cid
    assert container_in(f"12:pids:/kubepods/burstable/pod1/cri-containerd-{cid}.scope\n") == cid
    assert container_in("0::/user.slice/user-1000.slice/session-2.scope\n") is None


def test_a_real_process_is_reported_with_its_executable_hash_user_and_start(tmp_path: Path, spawn: list) -> None:
    copy = tmp_path / "sleep-copy"
    shutil.copy(SLEEP, copy)
    with open(copy, "ab") as f:
        f.write(b"\0")
    spawn.append(subprocess.Popen([str(copy), "300"]))
    found = scan_pid(spawn[0].pid)
    assert found is not None
    assert (found.exe, found.sha256, found.script) == (str(copy), sha256_of(copy), None)
    assert found.sha256 != sha256_of(Path(SLEEP))
    assert found.cmdline == f"{copy} 300" and found.user and found.started > 0


def test_a_binary_deleted_while_it_runs_is_hashed_from_what_runs(tmp_path: Path, spawn: list) -> None:
    copy = tmp_path / "sleep-copy"
    shutil.copy(SLEEP, copy)
    spawn.append(subprocess.Popen([str(copy), "300"]))
    expected = sha256_of(copy)
    copy.unlink()
    copy.write_bytes(b"something else now")  # another file at the same path
    assert scan_pid(spawn[0].pid).sha256 == expected


def test_a_script_run_by_an_interpreter_is_reported_with_its_own_hash(tmp_path: Path, spawn: list) -> None:
    script = tmp_path / "app.py"
    script.write_text("import time\ntime.sleep(300)\n")
    spawn.append(subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path))
    found = scan_script(spawn[0].pid)
    assert found is not None and (found.script, found.script_sha256) == ("app.py", sha256_of(script))


@pytest.mark.parametrize("named", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
def test_a_script_run_from_the_processs_own_descriptor_is_read_through_it(
    tmp_path: Path, spawn: list, named: str
) -> None:
    """``bash /dev/fd/3 3<run.sh``: read here as it is named, it would be this sensor's own fd 3,
    and the process would be reported running whatever file that is."""
    script = tmp_path / "run.sh"
    script.write_text("sleep 300\n")
    decoy = tmp_path / "decoy.sh"
    decoy.write_text("# not what runs\n")
    fd = os.open(script, os.O_RDONLY)
    try:
        spawn.append(subprocess.Popen(["bash", named.format(fd=fd)], pass_fds=(fd,)))
        held = os.open(decoy, os.O_RDONLY)
        os.dup2(held, fd)  # the sensor's fd of that number is now another file
        os.close(held)
        found = scan_script(spawn[0].pid)
    finally:
        os.close(fd)
    assert found is not None and found.script == named.format(fd=fd)
    assert found.script_sha256 == sha256_of(script) != sha256_of(decoy)


def test_a_processs_paths_are_read_as_that_process_sees_them() -> None:
    """Relative paths from its working directory, absolute ones below its root (a container's
    own files), its own descriptors through its fd table; a synthetic table's as they are."""
    live = ProcInfo(42, 1, "/usr/bin/python3", ("python3",), "u", "/proc/42/exe", proc="/proc/42")
    assert [opened_as(live, p) for p in ("app.py", "lib/run.sh", "/srv/app.py", "/dev/fd/3", "/dev/stdin")] == [
        "/proc/42/cwd/app.py",
        "/proc/42/cwd/lib/run.sh",
        "/proc/42/root/srv/app.py",
        "/proc/42/fd/3",
        "/proc/42/fd/0",
    ]
    assert opened_as(live, "/proc/self/fd/7") == opened_as(live, "/proc/thread-self/fd/7") == "/proc/42/fd/7"
    assert opened_as(live, "/dev/fd/") == "/proc/42/root/dev/fd/"  # no descriptor named
    synthetic = ProcInfo(42, 1, "/usr/bin/python3", ("python3",), "u", "/usr/bin/python3")
    assert opened_as(synthetic, "/srv/app.py") == "/srv/app.py"


def test_excluded_executables_are_not_reported_and_command_lines_can_be_dropped(tmp_path: Path, spawn: list) -> None:
    copy = tmp_path / "sleep-copy"
    shutil.copy(SLEEP, copy)
    spawn.append(subprocess.Popen([str(copy), "300"]))
    assert scan_pid(spawn[0].pid, RuntimeSettings(exclude=(f"{tmp_path}/*",))) is None
    assert scan_pid(spawn[0].pid, RuntimeSettings(exclude=("sleep-*",))) is None
    assert scan_pid(spawn[0].pid, RuntimeSettings(drop_cmdline=True)).cmdline is None


def test_a_warm_scan_of_the_same_processes_hashes_nothing_again() -> None:
    cache, table = HashCache(4096), list(live_processes())
    cold, _ = Scanner(cache).scan(table, RuntimeSettings())
    hashed = cache.hashed
    warm, _ = Scanner(cache).scan(table, RuntimeSettings())
    assert hashed > 0 and cache.hashed == hashed
    # a process of the machine that exited between the two scans cannot be read the second time
    lived = [k for k, p in warm.items() if p.sha256 is not None]
    assert len(lived) > 0 and [warm[k].sha256 for k in lived] == [cold[k].sha256 for k in lived]


@pytest.mark.parametrize("count", [0, 1, MAX_PROCESSES - 1, MAX_PROCESSES, MAX_PROCESSES + 1])
def test_a_scan_keeps_at_most_the_cap_of_processes_and_says_so(tmp_path: Path, count: int) -> None:
    exe = tmp_path / "tool"
    exe.write_bytes(b"x")
    table = [ProcInfo(pid, 1, str(exe), (str(exe),), "u", str(exe)) for pid in range(count)]
    found, truncated = Scanner(HashCache(16), containers=False).scan(table, RuntimeSettings())
    assert len(found) == min(count, MAX_PROCESSES)
    assert truncated is (count > MAX_PROCESSES)


# -- drift ------------------------------------------------------------------------------------


@pytest.fixture(name="installed")
def installed_fixture(tmp_path: Path, key_factory: KeyFactory, keys: KeySet) -> tuple[Path, Path]:
    """App ``till`` 1.0 installed by the agent's installer, its verified file list kept."""
    files = {"app.py": b"print('till')\n", "etc/till.conf": b"port=1\n"}
    bundle = make_bundle(key_factory, keys.alice, "till-app", "1.0", files)
    data_dir, install_dir = tmp_path / "agent", tmp_path / "opt" / "till"
    staged = tmp_path / "staged"
    staged.mkdir()
    for rel, data in files.items():
        (staged / rel.replace("/", "_")).write_bytes(data)
    installer = Installer(AppSpec("till", "till-app", str(install_dir)))
    installer.build("1.0", {rel: staged / rel.replace("/", "_") for rel in files})
    installer.switch("1.0")
    data_dir.mkdir()
    keep_manifest(data_dir, "till", "1.0", bundle.manifest)
    AppRegistry(data_dir).record("till", str(install_dir), None)
    return data_dir, install_dir / "versions" / "1.0"


def test_an_untouched_install_has_no_drift(installed: tuple[Path, Path]) -> None:
    data_dir, _ = installed
    (drift,) = DriftChecker(data_dir, 0).check()
    assert (drift.app, drift.version, drift.findings()) == ("till", "1.0", [])


def test_modified_missing_and_extra_files_are_named(installed: tuple[Path, Path]) -> None:
    data_dir, root = installed
    (root / "app.py").write_bytes(b"print('changed')\n")
    (root / "etc" / "till.conf").unlink()
    (root / "etc" / "backdoor.sh").write_bytes(b"#!/bin/sh\n")
    (drift,) = DriftChecker(data_dir, 0).check()
    assert drift.findings() == [("modified", "app.py"), ("missing", "etc/till.conf"), ("extra", "etc/backdoor.sh")]


def test_a_file_replaced_by_a_link_to_the_same_bytes_is_not_the_installed_file(installed: tuple[Path, Path]) -> None:
    data_dir, root = installed
    copy = root.parent.parent / "elsewhere.py"
    shutil.copy(root / "app.py", copy)
    (root / "app.py").unlink()
    (root / "app.py").symlink_to(copy)
    (drift,) = DriftChecker(data_dir, 0).check()
    assert drift.findings() == [("missing", "app.py")]


def test_drift_checks_read_at_the_configured_rate(installed: tuple[Path, Path]) -> None:
    data_dir, _ = installed
    slept: list[float] = []
    DriftChecker(data_dir, 5, sleep=slept.append).check()  # 5 bytes a second; the files hold 21
    assert sum(slept) >= (21 - 5) / 5
