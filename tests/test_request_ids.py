"""Request ids a service makes itself: 32 hex digits, never the same twice, in one process or
across the worker processes forked from it."""

from __future__ import annotations

import os
import re

import pytest

from repository.http import request_ids
from repository.http.request_ids import BATCH, fresh_id, request_id_of

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("count", [0, 1, BATCH - 1, BATCH, BATCH + 1, 5 * BATCH])
def test_fresh_ids_are_32_hex_digits_and_never_repeat_across_draws(count: int) -> None:
    request_ids._drawn.clear()  # start from a new draw, so the counts meet its boundaries
    ids = [fresh_id() for _ in range(count)] + [request_id_of(None) for _ in range(BATCH + 1)]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_never_answers_an_id_its_parent_had_drawn() -> None:
    parent_first = fresh_id()  # the rest of this draw stays in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: its ids, one line each, then gone
        try:
            os.write(write, "\n".join(fresh_id() for _ in range(BATCH)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {parent_first} | {fresh_id() for _ in range(BATCH)}
    assert len(child) == BATCH and all(HEX32.fullmatch(i) for i in child)
    assert not child & parent


@pytest.mark.parametrize(
    ("header", "kept"),
    [("", False), ("a", True), ("a" * 127, True), ("a" * 128, True), ("a" * 129, False), ("Az09._:-", True)],
    ids=["0", "1", "127", "128", "129", "every-allowed-kind"],
)
def test_a_client_id_is_kept_from_1_to_128_sane_characters(header: str, kept: bool) -> None:
    answered = request_id_of(header)
    assert (answered == header) is kept
    assert kept or HEX32.fullmatch(answered)
