"""A bundle DELETE on an edge removes at most ``removal_files_per_request`` files and answers how far
it got (202), so no request of a big removal runs long; the Distribution service calls again until
it answers 204. The bundle is hidden whole by the first call, each call goes on where the last one
stopped, and a call after the end answers 404 and changes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from edge.settings import MAX_REMOVAL_FILES_PER_REQUEST, EdgeSettings
from tests.conftest import error_of, make_settings
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_edge_bundle_pages import listed, rows, served, stored, targets
from tests.test_edge_transactions import BUNDLES, ENGINES, TX, database_url, download, manifest_of, push, signed
from tests.test_edge_transactions import dist as dist  # noqa: F401  (the fixture)

STEP = 3


@pytest.fixture(params=ENGINES)
def edge_settings(request: pytest.FixtureRequest, tmp_path: Any) -> EdgeSettings:
    return make_settings(tmp_path, removal_files_per_request=STEP, database_url=database_url(request))


def files_of(count: int) -> dict[str, bytes]:
    return {f"f{i:02d}.bin": os.urandom(100 + i) for i in range(count)}


async def removal_answers(edge: Any, dist: dict[str, str], version: str) -> list[tuple[int, Any]]:
    """DELETE the bundle again and again, as the service does, until it answers something but 202."""
    answers: list[tuple[int, Any]] = []
    while not answers or answers[-1][0] == 202:
        resp = await edge.delete(f"{BUNDLES}/app/{version}", headers=dist)
        answers.append((resp.status, await resp.json() if resp.status == 202 else None))
        assert len(answers) <= 100, answers  # a hang guard
    return answers


@pytest.mark.parametrize("count", [0, 1, STEP - 1, STEP, STEP + 1, 3 * STEP + 1])
async def test_each_delete_removes_at_most_the_set_number_of_files_and_says_how_far_it_got(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, count: int
) -> None:
    kept = files_of(2)
    await push(edge, signed(key_factory, keys.alice, manifest_of(kept, version="0.9")), dist, kept)
    files = {p: os.urandom(300) for p in (f"g{i:02d}.bin" for i in range(count))}
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)

    first = await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)
    # hidden whole by the first call, whatever is left to remove
    assert await served(edge, files) == [404] * count
    assert await listed(edge, dist) == ["app/0.9"]
    answers = [(first.status, await first.json() if first.status == 202 else None)]
    if first.status == 202:
        answers += await removal_answers(edge, dist, "1.0.0")

    steps = -(-count // STEP) or 1
    expected = [(202, {"status": "in_progress", "removed": STEP * i, "total": count}) for i in range(1, steps)]
    assert answers == [*expected, (204, None)]
    assert [await stored(edge, data) for data in files.values()] == [False] * count
    assert await rows(edge, "SELECT name FROM bundle_files WHERE name = 'app' AND version = '1.0.0'") == []
    assert await rows(edge, "SELECT * FROM bulk_changes") + await rows(edge, "SELECT * FROM bundle_changes") == []
    # a DELETE after the end: 404, and the other version is served as before
    resp = await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)
    assert await error_of(resp) == (404, "No release bundle app/1.0.0 on this edge")
    assert [await download(edge, t) for t in targets(kept, version="0.9")] == [(200, d) for d in kept.values()]


async def test_a_removal_goes_on_where_the_last_request_stopped_and_a_second_bundle_is_untouched(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """Files of the bundle that another bundle also holds (same path, same bytes) stay, for that one."""
    files = files_of(2 * STEP + 2)
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    other = {"extra.bin": os.urandom(64), "f00.bin": files["f00.bin"]}  # a blob both hold
    await push(edge, signed(key_factory, keys.alice, manifest_of(other, name="tool", version="2")), dist, other)
    assert [status for status, _ in await removal_answers(edge, dist, "1.0.0")] == [202, 202, 204]
    assert await served(edge, files) == [404] * len(files)
    assert [await download(edge, t) for t in targets(other, "tool", "2")] == [(200, d) for d in other.values()]
    assert await stored(edge, files["f00.bin"])
    assert await listed(edge, dist) == ["tool/2"]


async def test_a_delete_of_a_bundle_that_is_not_there_or_by_a_reader_changes_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    files = files_of(STEP + 1)
    await push(edge, signed(key_factory, keys.alice, manifest_of(files)), dist, files)
    for path in (f"{BUNDLES}/app/9.9", f"{BUNDLES}/nope/1.0.0", f"{BUNDLES}/app/1.0.0%2F..", f"{BUNDLES}/app/%00"):
        resp = await edge.delete(path, headers=dist)
        assert resp.status == 404, path
        assert (await resp.json())["errors"][0]["status"] == 404
    resp = await edge.delete(f"{BUNDLES}/app/1.0.0")  # no token
    assert (await error_of(resp))[0] == 401
    assert await served(edge, files) == [200] * len(files)
    assert await listed(edge, dist) == ["app/1.0.0"]
    assert await rows(edge, "SELECT * FROM bundle_changes") == []


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(0, False), (1, True), (MAX_REMOVAL_FILES_PER_REQUEST - 1, True), (MAX_REMOVAL_FILES_PER_REQUEST, True),
     (MAX_REMOVAL_FILES_PER_REQUEST + 1, False), (-1, False)],
)  # fmt: skip
def test_the_files_per_removal_request_setting_is_checked_at_start(tmp_path: Any, value: int, accepted: bool) -> None:
    if accepted:
        assert make_settings(tmp_path, removal_files_per_request=value).removal_files_per_request == value
    else:
        with pytest.raises(ValueError, match="removal_files_per_request"):
            make_settings(tmp_path, removal_files_per_request=value)


async def test_a_start_of_a_bundle_whose_removal_is_unfinished_is_a_409_until_the_removal_ends(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """An undistribute stopped part-way (aborted, or its job failed) leaves the bundle hidden and
    part-removed: a distribution of that version again must not find it "committed already" and
    publish what is left; it is told to finish the removal first, and nothing changes meanwhile."""
    files = files_of(2 * STEP + 1)
    body = signed(key_factory, keys.alice, manifest_of(files))
    await push(edge, body, dist, files)
    first = await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)
    assert first.status == 202
    before = await rows(edge, "SELECT path FROM bundle_files WHERE name = 'app' ORDER BY path")

    resp = await edge.post(TX, json=body, headers=dist)
    status, message = await error_of(resp)
    assert status == 409
    assert message == (
        "Release bundle app/1.0.0 is being removed from this edge: undistribute it again to finish the removal,"
        " then distribute it"
    )
    assert await rows(edge, "SELECT path FROM bundle_files WHERE name = 'app' ORDER BY path") == before
    assert await served(edge, files) == [404] * len(files)

    assert [status for status, _ in await removal_answers(edge, dist, "1.0.0")] == [202, 204]
    again = await push(edge, body, dist, files)  # the removal over, the same manifest goes out again whole
    assert again["state"] == "COMMITTED"
    assert await served(edge, files) == [200] * len(files)
