"""Virtual repos without a server: which configurations may be stored, the order members resolve
in, the merged listings (first member wins, folders union), and the store on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.virtual_repos import VirtualRepoStore
from repository.db import Database
from repository.virtual import (
    MAX_MEMBERS,
    VirtualConfigError,
    VirtualRepo,
    check_members,
    expand,
    first_wins,
    merge_sorted,
)
from tests.test_access_stores import replicas_fixture  # noqa: F401  (two processes' connections to one database)

LOCAL = {f"local-{n}" for n in range(MAX_MEMBERS + 1)}


def _check(key: str, members: object, virtual: dict[str, VirtualRepo] | None = None) -> tuple[str, ...]:
    return check_members(key, members, exists=LOCAL.__contains__, lookup=(virtual or {}).get)


@pytest.mark.parametrize("count", [0, 1, MAX_MEMBERS - 1, MAX_MEMBERS])
def test_a_virtual_repo_may_list_up_to_the_limit_of_members(count: int) -> None:
    members = [f"local-{n}" for n in range(count)]
    assert _check("virt", members) == tuple(members)


def test_one_member_past_the_limit_is_refused() -> None:
    with pytest.raises(VirtualConfigError, match=f"at most {MAX_MEMBERS}"):
        _check("virt", [f"local-{n}" for n in range(MAX_MEMBERS + 1)])


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["local-1", "local-1"], "listed twice"),
        (["nowhere"], "does not exist"),
        (["virt"], "cannot include itself"),
        (["bad key"], "Invalid repository key"),
        ("local-1", "must be a list"),
        ([1], "must be a list"),
    ],
)
def test_bad_member_lists_are_refused_with_the_reason(members: object, message: str) -> None:
    with pytest.raises(VirtualConfigError, match=message):
        _check("virt", members)


def test_nesting_is_allowed_but_a_cycle_at_any_depth_is_refused() -> None:
    virtual = {
        "inner": VirtualRepo("inner", ("local-1", "middle")),
        "middle": VirtualRepo("middle", ("local-2", "outer")),
        "outer": VirtualRepo("outer", ()),
    }
    assert _check("outer", ["local-3"], virtual) == ("local-3",)
    assert _check("other", ["inner"], virtual) == ("inner",)
    with pytest.raises(VirtualConfigError, match="cycle"):
        _check("outer", ["local-3", "inner"], virtual)


def test_nested_members_resolve_depth_first_each_once() -> None:
    virtual = {
        "top": VirtualRepo("top", ("a", "mid", "b", "c")),
        "mid": VirtualRepo("mid", ("c", "b", "leaf")),
        "leaf": VirtualRepo("leaf", ("a", "d")),
    }
    assert expand("top", virtual.get) == ["a", "c", "b", "d"]
    assert expand("leaf", virtual.get) == ["a", "d"]
    assert expand("empty", virtual.get) == []


names = st.sampled_from(["a", "a/b", "a/c", "b", "b/x", "c", "z/y/x"])
# each member: names it holds, each with the member's own entry
members = st.lists(st.sets(names), max_size=5)


@given(members)
def test_a_merged_listing_is_the_union_where_the_first_member_holding_a_name_wins(held: list[set[str]]) -> None:
    listings = [[(name, (index, name)) for name in sorted(names)] for index, names in enumerate(held)]
    merged = first_wins(listings)
    union = set().union(*held)
    assert [name for name, _ in merged] == sorted(union)
    for name, (index, _) in merged:
        assert name in held[index] and not any(name in earlier for earlier in held[:index])


@given(members)
async def test_the_streamed_merge_answers_the_same_as_the_whole_one(held: list[set[str]]) -> None:
    async def stream(index: int, names: set[str]) -> AsyncIterator[tuple[str, tuple[int, str]]]:
        for name in sorted(names):
            yield name, (index, name)

    listings = [[(name, (index, name)) for name in sorted(names)] for index, names in enumerate(held)]
    streamed = [item async for item in merge_sorted([stream(i, names) for i, names in enumerate(held)])]
    assert streamed == first_wins(listings)


async def test_virtual_repos_are_kept_changed_and_removed_for_every_process(
    replicas: tuple[Database, Database],
) -> None:
    one, two = VirtualRepoStore(replicas[0]), VirtualRepoStore(replicas[1])
    await one.load()
    made = await one.put(VirtualRepo("all", ("b-local", "a-local"), "both", anonymous_read=True))
    assert made.created > 0
    await two.load()
    assert two.get("all") == made and two.all() == [made]
    changed = await two.put(VirtualRepo("all", ("a-local",), "", anonymous_read=False))
    assert changed.created == made.created
    await one.load()
    assert one.get("all") == changed and one.listing("a-local") == ["all"] and one.listing("b-local") == []
    await one.delete("all")
    await two.load()
    assert two.get("all") is None and two.all() == []
