"""What the workers of one edge share: the change counter (repository/generation.py) and the
locks held across processes (repository/file_locks.py), tried with real processes."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from repository.file_locks import FileLocks, key_offset
from repository.generation import HotCopies, SharedGeneration

GIVE_UP = 30.0  # a hang guard, not a speed check
FORK = multiprocessing.get_context("fork")


def test_a_bump_in_one_process_is_a_move_in_another_once(tmp_path: Path) -> None:
    mine, theirs = SharedGeneration(tmp_path / "g"), SharedGeneration(tmp_path / "g")
    assert not mine.moved()
    child = FORK.Process(target=_bump, args=(tmp_path / "g",))
    child.start()
    child.join(GIVE_UP)
    assert child.exitcode == 0
    assert mine.moved() and theirs.moved()
    assert not mine.moved() and not theirs.moved()
    mine.close()
    theirs.close()


def _bump(path: Path) -> None:
    generation = SharedGeneration(path)
    generation.bump()
    generation.close()


def test_a_process_does_not_see_its_own_bump_as_a_move_but_sees_one_made_before_it(tmp_path: Path) -> None:
    mine, theirs = SharedGeneration(tmp_path / "g"), SharedGeneration(tmp_path / "g")
    mine.bump()
    assert not mine.moved()  # its own copies it dropped itself
    assert theirs.moved()
    theirs.bump()
    mine.bump()  # another process bumped first: still a move for this one
    assert mine.moved()
    mine.close()
    theirs.close()


async def test_copies_are_refreshed_once_per_move_and_a_failed_refresh_is_tried_again(tmp_path: Path) -> None:
    copies, other = HotCopies(), SharedGeneration(tmp_path / "g")
    copies.open(tmp_path / "g")
    refreshed: list[str] = []
    failing = [True]

    async def reload() -> None:
        if failing[0]:
            failing[0] = False
            raise OSError("database busy")
        refreshed.append("reloaded")

    copies.register(lambda: refreshed.append("dropped"))
    copies.register(reload)
    assert not copies.stale()
    other.bump()
    assert copies.stale()
    with pytest.raises(OSError):
        await copies.wait()
    assert copies.stale()  # nothing moved since, but the failed refresh is due again
    await copies.wait()
    assert refreshed == ["dropped", "dropped", "reloaded"]
    while copies.stale():
        await copies.wait()
    assert refreshed == ["dropped", "dropped", "reloaded"]
    copies.close()
    other.close()


def _hold(directory: Path, kind: str, key: str, held: Any, released: Any, seconds: float) -> None:
    async def hold() -> None:
        locks = FileLocks(directory, kind)
        async with locks(key):
            held.set()
            await asyncio.sleep(seconds)
            released.set()

    asyncio.run(hold())


async def test_a_lock_held_by_another_process_is_waited_for_and_other_keys_are_not(tmp_path: Path) -> None:
    held, released = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold, args=(tmp_path, "transaction", "tx-1", held, released, 1.0))
    child.start()
    try:
        assert await asyncio.to_thread(held.wait, GIVE_UP)
        locks = FileLocks(tmp_path, "transaction")
        async with locks("tx-2"):  # another key: no wait
            assert not released.is_set()
        async with locks("tx-1"):
            assert released.is_set()
        locks.close()
    finally:
        child.join(GIVE_UP)
    assert child.exitcode == 0


async def test_a_lock_of_a_process_killed_9_is_free_at_once(tmp_path: Path) -> None:
    held = FORK.Event()
    child = FORK.Process(target=_hold, args=(tmp_path, "index", "", held, FORK.Event(), 3600.0))
    child.start()
    assert await asyncio.to_thread(held.wait, GIVE_UP)
    locks = FileLocks(tmp_path, "index")
    assert not _free_now(locks), "the child holds the lock (for an hour)"
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(GIVE_UP)
    assert child.exitcode == -signal.SIGKILL
    assert _free_now(locks), "the kernel dropped the dead child's lock"
    async with locks():  # and the lock's own way of taking it gets it
        assert locks.locked()
    locks.close()


def _free_now(locks: FileLocks, key: str = "") -> bool:
    """Whether a try without waiting takes ``key``'s byte of the lock file (let go at once)."""
    fd = os.open(locks.path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key_offset(key))
    except (BlockingIOError, PermissionError):
        return False
    finally:
        os.close(fd)  # closing drops this process's record locks on the file
    return True


async def test_coroutines_of_one_process_take_a_key_one_at_a_time(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path, "blob")
    inside: list[int] = []
    most = 0

    async def one() -> None:
        nonlocal most
        async with locks("tx/blob"):
            inside.append(1)
            most = max(most, len(inside))
            await asyncio.sleep(0.01)
            inside.pop()

    await asyncio.gather(*(one() for _ in range(5)))
    assert most == 1
    locks.close()
