"""Release Bundle specs: patterns and the AQL JFrog CLI sends select exactly the files
they say, scopes never miss a match, mappings land where they say, and every bad spec
is refused with a message that names the part that is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from distribution.specs import NestedTargets, Query, Scope, SpecError, parse_spec
from repository.errors import BadRequest

ANY = Scope(None, "")

# What `jf ds rbc app 1.4.0 "releases-local/app/1.4.0/*"` sends (jfrog-client-go's
# CreateAqlBodyForSpecWithPattern, recursive, then BuildQueryFromSpecFile).
CLI_AQL = (
    'items.find({"path":{"$ne":"."},"$or":['
    '{"$and":[{"repo":"releases-local","path":"app/1.4.0","name":{"$match":"*"}}]},'
    '{"$and":[{"repo":"releases-local","path":{"$match":"app/1.4.0/*"},"name":{"$match":"*"}}]}'
    ']}).include("name","repo","path","actual_md5","actual_sha1","sha256","size","type","modified","created")'
)


def query(**fields: Any) -> Query:
    (parsed,) = parse_spec({"queries": [fields]})
    return parsed


def aql(criteria: Any) -> Query:
    return query(aql=f"items.find({json.dumps(criteria)})")


def refusal(spec: Any, **kwargs: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec, **kwargs)
    return info.value.message


def query_refusal(**fields: Any) -> str:
    return refusal({"queries": [fields]})


# -- patterns --------------------------------------------------------------------------


def test_a_star_matches_within_one_folder_only() -> None:
    q = query(pattern="r/app/*.tgz")
    assert q.matches("r", "app/a.tgz")
    assert q.matches("r", "app/.tgz")
    assert not q.matches("r", "app/x/a.tgz")
    assert not q.matches("r", "app/a.tar")
    assert not q.matches("r", "a.tgz")


def test_a_question_mark_matches_one_character_but_never_a_slash() -> None:
    q = query(pattern="r/app/v?.bin")
    assert q.matches("r", "app/v1.bin")
    assert not q.matches("r", "app/v12.bin")
    assert not q.matches("r", "app/v.bin")
    assert not query(pattern="r/a?b").matches("r", "a/b")


@pytest.mark.parametrize(
    ("pattern", "selected", "not_selected"),
    [
        ("r/**", ["a", "a/b", "a/b/c.tgz"], []),
        ("r/a/**", ["a/x", "a/x/y", "a/x/y/z.tgz"], ["a", "ab/x", "b/a/x"]),
        ("r/**/b.tgz", ["b.tgz", "x/b.tgz", "x/y/b.tgz"], ["xb.tgz", "x/b.tgz/c", "b.tgzz"]),
        ("r/a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b", "a/x/b/c", "x/a/b"]),
        ("r/a/**/**/b", ["a/b", "a/x/y/b"], ["a/x/c"]),
        ("r/**/lib/*.so", ["lib/x.so", "usr/lib/x.so", "a/b/lib/y.so"], ["usr/lib/z/x.so", "usr/lib"]),
        ("r/a/**/c/**/d", ["a/c/d", "a/x/c/y/d", "a/c/c/d"], ["a/c", "a/d", "a/x/d"]),
    ],
)
def test_double_star_matches_any_number_of_folders_at_start_middle_and_end(
    pattern: str, selected: list[str], not_selected: list[str]
) -> None:
    q = query(pattern=pattern)
    assert [p for p in selected if not q.matches("r", p)] == []
    assert [p for p in not_selected if q.matches("r", p)] == []


def test_a_pattern_without_wildcards_selects_exactly_that_file() -> None:
    q = query(pattern="releases-local/app/1.4.0/app.tgz")
    assert q.matches("releases-local", "app/1.4.0/app.tgz")
    assert not q.matches("releases-local", "app/1.4.0/app.tgz.sha256")
    assert not q.matches("releases-local", "app/1.4.0/app.tgz/x")
    assert not q.matches("releases-local", "app/1.4.0/app_tgz")


def test_dots_brackets_braces_and_parentheses_in_patterns_are_literal() -> None:
    q = query(pattern="r/app/[1].{x}(y)+$^|.tgz")
    assert q.matches("r", "app/[1].{x}(y)+$^|.tgz")
    assert not q.matches("r", "app/1.{x}(y)+$^|.tgz")
    assert not query(pattern="r/app/v1.0").matches("r", "app/v1x0")
    assert query(pattern="r/app/[ab]*").matches("r", "app/[ab]c")
    assert not query(pattern="r/app/[ab]*").matches("r", "app/a")


def test_a_pattern_only_selects_files_of_its_own_repository() -> None:
    q = query(pattern="releases-local/**")
    assert q.matches("releases-local", "a.tgz")
    assert not q.matches("releases-local2", "a.tgz")
    assert not q.matches("other", "a.tgz")


@pytest.mark.parametrize(
    ("pattern", "scope"),
    [
        ("releases-local/app/1.4.0/**", Scope("releases-local", "app/1.4.0")),
        ("releases-local/app/1.4.0/*", Scope("releases-local", "app/1.4.0")),
        ("releases-local/app/1.4.0/app.tgz", Scope("releases-local", "app/1.4.0")),
        ("releases-local/app/1.4.*/app.tgz", Scope("releases-local", "app")),
        ("releases-local/app/v?/x", Scope("releases-local", "app")),
        ("releases-local/**/app.tgz", Scope("releases-local", "")),
        ("releases-local/app.tgz", Scope("releases-local", "")),
        ("releases-local/*", Scope("releases-local", "")),
    ],
)
def test_a_pattern_scope_is_its_literal_folder_before_the_first_wildcard(pattern: str, scope: Scope) -> None:
    assert query(pattern=pattern).scopes == (scope,)


# A backtracking matcher would need on the order of 250**40 steps for these: it would never
# finish, and the timeout (a hang guard, not a speed check) would fail the test.
@pytest.mark.timeout(30)
def test_many_wildcards_never_make_matching_hang() -> None:
    glob = query(pattern="r/" + "*a" * 40 + "*b/**/" + "*a" * 40 + "*b")
    aql_q = aql({"repo": "r", "name": {"$match": "*a" * 40 + "*b"}, "path": {"$match": "*a?" * 40 + "*b"}})
    name = "a" * 250
    assert not glob.matches("r", f"{name}/{name}/{name}/{name}")
    assert not aql_q.matches("r", f"{name}/{name}/{name}")
    assert glob.matches("r", "a" * 41 + "b/" + "a" * 41 + "b")


# -- AQL -------------------------------------------------------------------------------


def test_the_query_jfrog_cli_generates_for_a_pattern_is_understood() -> None:
    q = query(aql=CLI_AQL)
    assert q.scopes == (Scope("releases-local", "app/1.4.0"),)
    assert q.matches("releases-local", "app/1.4.0/app.tgz")
    assert q.matches("releases-local", "app/1.4.0/docs/readme.txt")
    assert not q.matches("releases-local", "app/1.4.01/app.tgz")
    assert not q.matches("releases-local", "app/1.4.0")
    assert not q.matches("other-local", "app/1.4.0/app.tgz")


def test_the_or_and_shape_with_include_property_is_understood() -> None:
    q = query(
        aql='items.find({"$or":[{"$and":[{"repo":"r","path":{"$match":"a/*"},"name":{"$match":"*.tgz"}}]}]})'
        '.include("name","repo","path","actual_md5","actual_sha1","sha256","size","type","property")'
    )
    assert q.scopes == (Scope("r", "a"),)
    assert q.matches("r", "a/b/x.tgz")
    assert q.matches("r", "a/b/c/x.tgz")
    assert not q.matches("r", "a/x.tgz")  # path "a" is not matched by "a/*"
    assert not q.matches("r", "a/b/x.tar")


def test_a_bare_string_is_an_exact_match_with_no_wildcards() -> None:
    q = aql({"repo": "r", "path": "a/*", "name": "x.tgz"})
    assert q.matches("r", "a/*/x.tgz")
    assert not q.matches("r", "a/b/x.tgz")
    assert aql({"repo": {"$eq": "r"}, "name": {"$eq": "x?"}}).matches("r", "x?")
    assert not aql({"repo": {"$eq": "r"}, "name": {"$eq": "x?"}}).matches("r", "xy")


def test_aql_match_star_crosses_folders_and_question_mark_is_any_one_character() -> None:
    q = aql({"repo": "r", "path": {"$match": "app*"}})
    assert q.matches("r", "app/x")
    assert q.matches("r", "app/1/2/3/x")
    assert q.matches("r", "apple/x")
    assert not q.matches("r", "x")
    q = aql({"repo": "r", "path": {"$match": "a?b"}})
    assert q.matches("r", "a/b/file")  # AQL's '?' is any character, '/' included
    assert not q.matches("r", "ab/file")
    assert aql({"name": {"$match": "*"}}).matches("r", "any/where/x")


def test_path_dot_names_the_files_at_the_repository_root() -> None:
    q = aql({"repo": "r", "path": "."})
    assert q.matches("r", "top.tgz")
    assert not q.matches("r", "a/top.tgz")
    assert q.scopes == (Scope("r", ""),)
    assert aql({"repo": "r", "path": {"$match": "*"}}).matches("r", "top.tgz")


def test_ne_and_nmatch_exclude_what_they_name() -> None:
    q = aql({"repo": "r", "path": {"$ne": "."}, "name": {"$nmatch": "*.sha256"}})
    assert q.matches("r", "a/x.tgz")
    assert not q.matches("r", "x.tgz")
    assert not q.matches("r", "a/x.tgz.sha256")
    assert q.scopes == (Scope("r", ""),)


def test_several_keys_in_one_object_must_all_hold() -> None:
    q = aql({"repo": "r", "path": "a", "name": {"$match": "*.tgz"}})
    assert q.matches("r", "a/x.tgz")
    assert not q.matches("s", "a/x.tgz")
    assert not q.matches("r", "b/x.tgz")
    assert not q.matches("r", "a/x.zip")


def test_and_and_or_nest_as_written() -> None:
    q = aql(
        {
            "$or": [
                {"$and": [{"repo": "r"}, {"$or": [{"name": "a.tgz"}, {"name": "b.tgz"}]}]},
                {"$and": [{"repo": "s"}, {"path": "docs"}]},
            ]
        }
    )
    assert q.matches("r", "x/a.tgz")
    assert q.matches("r", "b.tgz")
    assert not q.matches("r", "c.tgz")
    assert q.matches("s", "docs/any.txt")
    assert not q.matches("s", "a.tgz")
    assert q.scopes == (Scope("r", ""), Scope("s", "docs"))


@pytest.mark.parametrize(
    ("criteria", "scopes"),
    [
        ({"repo": "r"}, [Scope("r", "")]),
        ({"repo": "r", "path": "a/b"}, [Scope("r", "a/b")]),
        ({"repo": "r", "path": {"$match": "a/b*"}}, [Scope("r", "a")]),
        ({"repo": "r", "path": {"$match": "a/b/*"}}, [Scope("r", "a/b")]),
        ({"repo": "r", "path": {"$match": "app/1.4?0/*"}}, [Scope("r", "app")]),
        ({"repo": {"$match": "r"}, "path": {"$match": "a"}}, [Scope("r", "a")]),
        ({"$or": [{"repo": "a"}, {"repo": "b"}]}, [Scope("a", ""), Scope("b", "")]),
        ({"repo": "a", "$or": [{"path": "x"}, {"path": "y"}]}, [Scope("a", "x"), Scope("a", "y")]),
        ({"$or": [{"repo": "a", "path": "x"}, {"repo": "a"}]}, [Scope("a", "")]),
        ({"$or": [{"path": "x"}, {"repo": "r"}]}, [Scope(None, "x"), Scope("r", "")]),
        ({"path": "x/y", "$and": [{"path": {"$match": "x/*"}}]}, [Scope(None, "x/y")]),
        ({"repo": {"$match": "rel*"}}, [ANY]),
        ({"repo": {"$ne": "r"}}, [ANY]),
        ({"name": "x.tgz"}, [ANY]),
        ({"type": "file"}, [ANY]),
        ({}, [ANY]),
        ({"repo": "a", "$and": [{"repo": "b"}]}, []),
        ({"path": "a", "$and": [{"path": "b"}]}, []),
        ({"repo": "r", "path": "../etc"}, []),
    ],
)
def test_aql_scopes_are_the_subtrees_that_can_hold_a_match(criteria: Any, scopes: list[Scope]) -> None:
    assert list(aql(criteria).scopes) == scopes


def test_too_many_scopes_are_widened_never_dropped() -> None:
    one_repo = aql({"repo": "r", "$or": [{"path": f"p{i}"} for i in range(100)]})
    assert one_repo.scopes == (Scope("r", ""),)
    many_repos = aql({"$or": [{"repo": f"r{i}"} for i in range(100)]})
    assert many_repos.scopes == (ANY,)
    repos = {"$or": [{"repo": f"r{i}"} for i in range(10)]}
    paths = {"$or": [{"path": f"p{i}"} for i in range(10)]}
    product = aql({"$and": [repos, paths]})  # 100 (repo, folder) pairs: widened to the 10 repos
    assert product.scopes == tuple(Scope(f"r{i}", "") for i in range(10))
    assert product.matches("r3", "p7/x")
    within_limit = aql({"$and": [{"$or": [{"path": {"$match": f"a{i}/*"}} for i in range(20)]}] * 3})
    assert within_limit.scopes == tuple(sorted((Scope(None, f"a{i}") for i in range(20)), key=lambda s: s.folder))


def test_include_is_ignored_and_whitespace_between_tokens_is_allowed() -> None:
    q = query(aql=' items . find ( { "repo" : "r" } ) . include ( "name" , "repo" ) .include() ')
    assert q.matches("r", "x")
    assert query(aql="items.find()").matches("any", "thing")
    assert query(aql='items.find({"type":{"$eq":"file"},"repo":"r"})').matches("r", "x")


# -- mappings and properties -----------------------------------------------------------


def test_dollar_n_and_braced_groups_both_substitute() -> None:
    q = query(
        pattern="r/**",
        mappings=[{"input": r"r/app/([^/]+)/(.*)", "output": "edge/${1}/files/$2"}],
    )
    assert q.target("r", "app/1.4.0/a/b.tgz") == "edge/1.4.0/files/a/b.tgz"


def test_the_first_matching_mapping_wins_and_unmatched_paths_stay_as_they_are() -> None:
    q = query(
        pattern="r/**",
        mappings=[
            {"input": r"r/(.*)\.tgz", "output": "tars/$1.tgz"},
            {"input": r"r/(.*)", "output": "all/$1"},
            {"input": r"r/(.*)\.zip", "output": "never/$1"},
        ],
    )
    assert q.target("r", "a/x.tgz") == "tars/a/x.tgz"
    assert q.target("r", "a/x.zip") == "all/a/x.zip"
    assert query(pattern="r/**").target("r", "a/x.tgz") == "r/a/x.tgz"
    partial = query(pattern="r/**", mappings=[{"input": "r/a", "output": "s/b"}])
    assert partial.target("r", "a/x") == "r/a/x"  # input must match the whole repo/path


def test_the_mapping_jfrog_cli_generates_from_a_target_works() -> None:
    q = query(
        aql=CLI_AQL,
        mappings=[{"input": r"^releases-local/app/(.*)/(.*\.tgz)$", "output": "edge-local/$1/$2"}],
    )
    assert q.target("releases-local", "app/1.4.0/app.tgz") == "edge-local/1.4.0/app.tgz"


def test_named_groups_escaped_dollars_and_unmatched_optional_groups() -> None:
    q = query(
        pattern="r/**",
        mappings=[
            {"input": r"r/(?<ver>[0-9.]+)/(?P<file>.*)", "output": r"s/${ver}/\$${file}"},
            {"input": r"r/x(-dev)?/(.*)", "output": "s/y$1/$2"},
        ],
    )
    assert q.target("r", "1.0/a.tgz") == "s/1.0/$a.tgz"
    assert q.target("r", "x/a") == "s/y/a"
    assert q.target("r", "x-dev/a") == "s/y-dev/a"


def test_more_digits_join_a_group_number_only_while_that_group_exists() -> None:
    ten = "".join(f"({c})" for c in "abcdefghij")
    assert query(pattern="r/**", mappings=[{"input": "r/" + ten, "output": "s/$10"}]).target("r", "abcdefghij") == "s/j"
    one = query(pattern="r/**", mappings=[{"input": "r/(a)", "output": "s/$10"}])
    assert one.target("r", "a") == "s/a0"


@pytest.mark.parametrize(
    ("output", "produced"),
    [
        ("../x", "../x"),
        ("/abs/x", "/abs/x"),
        ("r//x", "r//x"),
        ("r/a/../../x", "r/a/../../x"),
        ("r/./x", "r/./x"),
        ("r/x/", "r/x/"),
        ("no-path", "no-path"),
        ("api/x", "api/x"),
        ("r/x\\y", "r/x\\y"),
    ],
)
def test_a_mapping_to_an_unsafe_target_is_refused(output: str, produced: str) -> None:
    q = query(pattern="r/**", mappings=[{"input": "r/a.tgz", "output": output.replace("\\", "\\\\")}])
    with pytest.raises(SpecError) as info:
        q.target("r", "a.tgz")
    assert f"mapping of 'r/a.tgz' produces unsafe target path {produced!r}" in info.value.message


def test_a_target_path_built_from_a_group_is_checked_too() -> None:
    q = query(pattern="r/**", mappings=[{"input": "r/(.*)/x", "output": "s/$1/../../etc"}])
    with pytest.raises(SpecError, match="produces unsafe target path 's/a/../../etc'"):
        q.target("r", "a/x")


def test_added_props_merge_repeated_keys_in_order_without_duplicates() -> None:
    q = query(
        pattern="r/**",
        added_props=[
            {"key": "team", "values": ["a", "b"]},
            {"key": "stage", "values": ["prod"]},
            {"key": "team", "values": ["b", "c"]},
            {"key": "empty", "values": []},
        ],
    )
    assert q.added_props == {"team": ("a", "b", "c"), "stage": ("prod",), "empty": ()}
    assert list(q.added_props) == ["team", "stage", "empty"]


def test_defaults_names_and_limits_that_are_accepted() -> None:
    first, second = parse_spec({"queries": [{"pattern": "r/a"}, {"query_name": "q" * 128, "aql": "items.find()"}]})
    assert first.name == "query-0"
    assert second.name == "q" * 128
    assert first.mappings == () and first.added_props == {}
    assert query(pattern="r/a", exclude_props_patterns=[], mappings=None, added_props=None).name == "query-0"
    assert len(parse_spec({"queries": [{"pattern": f"r/{i}"} for i in range(100)]})) == 100


def nest(pairs: list[tuple[str, str]]) -> None:
    nesting = NestedTargets()
    for source, target in pairs:
        nesting.add(source, target)


def test_a_target_inside_another_targets_file_is_refused_in_target_order() -> None:
    nest([("r/a", "s/x"), ("r/c", "s/x-y"), ("r/b", "s/y"), ("r/d", "s/y.d/z")])
    with pytest.raises(SpecError, match="'r/b' and 'r/a' collide at target path 's/x/y'"):
        nest([("r/a", "s/x"), ("r/b", "s/x/y")])
    # the targets sorting between a file and what is inside it do not hide it
    with pytest.raises(SpecError, match="'r/b' and 'r/a' collide at target path 's/x/y/z'"):
        nest([("r/a", "s/x"), ("r/c", "s/x-y"), ("r/d", "s/x.e/f"), ("r/b", "s/x/y/z")])


# -- refusals --------------------------------------------------------------------------


def test_a_spec_error_is_a_400_bad_request() -> None:
    error = SpecError("x")
    assert isinstance(error, BadRequest)
    assert error.status == 400


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec has no queries"),
        ({"queries": []}, "spec has no queries"),
        ({"queries": None}, "spec has no queries"),
        ([], "spec must be an object"),
        ({"queries": {"pattern": "r/a"}}, "spec.queries must be a list"),
        ({"queries": [{"pattern": "r/a"}], "extra": 1}, "spec: unknown key 'extra'"),
        ({"queries": ["r/a"]}, "queries[0]: must be an object"),
        ({"queries": [{"pattern": "r/a"}, {"pattern": "r/b", "target": "x"}]}, "queries[1]: unknown key 'target'"),
        (
            {"queries": [{"query_name": "q", "pattern": "r/a"}, {"query_name": "q", "pattern": "r/b"}]},
            "queries[1].query_name: 'q' is already used by queries[0]",
        ),
    ],
)
def test_a_malformed_spec_is_refused_by_name(spec: Any, message: str) -> None:
    assert message in refusal(spec)


def test_more_queries_than_allowed_are_refused() -> None:
    spec = {"queries": [{"pattern": f"r/{i}"} for i in range(3)]}
    assert refusal(spec, max_queries=2) == "spec has 3 queries; at most 2 are allowed"


LONG = "x" * (8 * 1024)

QUERY_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"pattern": "r/a", "aql": "items.find()"}, "queries[0]: give exactly one of 'pattern' or 'aql'"),
    ({"query_name": "q"}, "queries[0]: give exactly one of 'pattern' or 'aql'"),
    ({"pattern": ""}, "queries[0].pattern: must be a non-empty string"),
    ({"aql": 5}, "queries[0].aql: must be a non-empty string"),
    ({"pattern": "r/" + LONG}, "queries[0].pattern: longer than 8192 bytes"),
    ({"aql": "items.find()" + " " * 8192}, "queries[0].aql: longer than 8192 bytes"),
    ({"pattern": "r/a", "query_name": "q" * 129}, "queries[0].query_name: must be a non-empty string of at most 128"),
    ({"pattern": "r/a", "query_name": ""}, "queries[0].query_name: must be a non-empty string"),
    ({"pattern": "r/a", "query_name": 7}, "queries[0].query_name: must be a non-empty string"),
    ({"pattern": "r/a", "exclude_props_patterns": ["x"]}, "queries[0].exclude_props_patterns: not supported"),
    # patterns
    ({"pattern": "releases-local"}, "queries[0].pattern: must look like 'repo/path'"),
    ({"pattern": "releases-local/"}, "queries[0].pattern: must look like 'repo/path'"),
    ({"pattern": "rel*/a"}, "queries[0].pattern: 'rel*' is not a repository key"),
    ({"pattern": "../a"}, "queries[0].pattern: '..' is not a repository key"),
    ({"pattern": "/r/a"}, "queries[0].pattern: '' is not a repository key"),
    ({"pattern": "r/app/"}, "queries[0].pattern: ends with '/'; add '**'"),
    ({"pattern": "r/a//b"}, "queries[0].pattern: invalid path 'a//b': empty, '.' or '..' segment"),
    ({"pattern": "r/a/../b"}, "queries[0].pattern: invalid path 'a/../b'"),
    ({"pattern": "r/a\\b"}, "queries[0].pattern: invalid path 'a\\\\b': backslash"),
    ({"pattern": "r/a\x00b"}, "queries[0].pattern: invalid path"),
    # AQL outside the subset
    ({"aql": 'items.find({"name":{"$gt":"a"}})'}, "queries[0].aql: name: operator $gt is not supported"),
    ({"aql": 'items.find({"$or":[{"name":{"$lt":"a"}}]})'}, "queries[0].aql: $or[0].name: operator $lt is not"),
    ({"aql": 'items.find({"$not":[{"repo":"r"}]})'}, "queries[0].aql: $not: operator $not is not supported here"),
    ({"aql": 'items.find({"$msp":[{"repo":"r"}]})'}, "queries[0].aql: $msp: operator $msp is not supported here"),
    ({"aql": 'items.find({"@build.name":{"$gt":"x"}})'}, "queries[0].aql: @build.name: operator $gt is not supported"),
    ({"aql": 'items.find({"@build.name":{"$eq":1}})'}, "queries[0].aql: @build.name.$eq: value must be a string"),
    ({"aql": 'items.find({"@":"x"})'}, "queries[0].aql: @: a property criterion needs a key after '@'"),
    ({"props": "=x", "pattern": "r/a"}, "queries[0].props: Malformed properties: a property key is empty"),
    ({"props": "a", "pattern": "r/a"}, "queries[0].props: Malformed property 'a': expected key=value"),
    ({"props": "", "pattern": "r/a"}, "queries[0].props: must be a non-empty string"),
    ({"aql": 'items.find({"created":"2020"})'}, "queries[0].aql: created: field 'created' is not supported"),
    (
        {"aql": 'items.find({"$and":[{"repo":"r"},{"size":{"$gt":"1"}}]})'},
        "queries[0].aql: $and[1].size: field 'size' is not supported",
    ),
    ({"aql": 'items.find({"type":"folder"})'}, "queries[0].aql: type: only type 'file' is supported"),
    ({"aql": 'items.find({"type":"any"})'}, "only type 'file' is supported"),
    ({"aql": 'builds.find({"name":"x"})'}, "queries[0].aql: domain 'builds' is not supported"),
    ({"aql": 'find({"name":"x"})'}, "queries[0].aql: must be items.find({...})"),
    ({"aql": 'items.find({"repo":"r"}'}, "queries[0].aql: expected ')' after the criteria"),
    ({"aql": 'items.find({"repo":"r",})'}, "queries[0].aql: malformed JSON: "),
    (
        {"aql": "items.find({'repo':'r'})"},
        "queries[0].aql: malformed JSON: Expecting property name enclosed in double quotes at character 12",
    ),
    ({"aql": 'items.find({"repo":"r","repo":"s"})'}, "queries[0].aql: malformed JSON: duplicate key 'repo'"),
    ({"aql": 'items.find({"$or":[{"name":"a","name":"b"}]})'}, "queries[0].aql: malformed JSON: duplicate key 'name'"),
    ({"aql": 'items.find({"name":{"$eq":NaN}})'}, "queries[0].aql: malformed JSON: NaN is not allowed"),
    ({"aql": 'items.find({"repo":1})'}, "queries[0].aql: repo: value must be a string or an object"),
    ({"aql": 'items.find({"repo":["r"]})'}, "queries[0].aql: repo: value must be a string or an object"),
    ({"aql": 'items.find({"repo":{}})'}, "queries[0].aql: repo: value must be a string or an object"),
    ({"aql": 'items.find({"repo":{"$eq":1}})'}, "queries[0].aql: repo.$eq: value must be a string, not int"),
    ({"aql": 'items.find({"name":{"$match":null}})'}, "queries[0].aql: name.$match: value must be a string, not None"),
    ({"aql": 'items.find({"name":{"$match":1.5}})'}, "name.$match: value must be a string, not float"),
    ({"aql": 'items.find({"$and":[]})'}, "queries[0].aql: $and: must be a non-empty list of objects"),
    ({"aql": 'items.find({"$or":{"repo":"r"}})'}, "queries[0].aql: $or: must be a non-empty list of objects"),
    ({"aql": 'items.find({"$or":["r"]})'}, "queries[0].aql: $or[0]: must be an object"),
    ({"aql": 'items.find([{"repo":"r"}])'}, "queries[0].aql: criteria: must be an object"),
    ({"aql": 'items.find("r")'}, "queries[0].aql: criteria: must be an object"),
    ({"aql": 'items.find({"repo":"r"}) junk'}, "queries[0].aql: unexpected text after items.find(...): 'junk'"),
    ({"aql": 'items.find({"repo":"r"}) items.find()'}, "unexpected text after items.find(...)"),
    ({"aql": 'items.find({"repo":"r"}).sort({"$asc":["name"]})'}, "queries[0].aql: .sort(...) is not supported"),
    ({"aql": 'items.find({"repo":"r"}).limit(1)'}, "queries[0].aql: .limit(...) is not supported"),
    ({"aql": 'items.find({"repo":"r"}).include(name)'}, "queries[0].aql: .include(...) is not supported"),
    ({"aql": "items.find(" + '{"$or":[' * 40 + "{}" + "]}" * 40 + ")"}, "criteria nest deeper than 32 levels"),
    ({"aql": "items.find(" + "[" * 4000 + "]" * 4000 + ")"}, "queries[0].aql: malformed JSON"),
    # mappings
    ({"pattern": "r/a", "mappings": {"input": "a"}}, "queries[0].mappings: must be a list"),
    ({"pattern": "r/a", "mappings": [{"input": "a", "output": "b"}] * 101}, "queries[0].mappings: has 101 entries"),
    ({"pattern": "r/a", "mappings": ["a"]}, "queries[0].mappings[0]: must be an object"),
    (
        {"pattern": "r/a", "mappings": [{"input": "a", "output": "b", "x": 1}]},
        "queries[0].mappings[0]: unknown key 'x'",
    ),
    ({"pattern": "r/a", "mappings": [{"input": "(", "output": "b"}]}, "queries[0].mappings[0].input: invalid regular"),
    ({"pattern": "r/a", "mappings": [{"input": "a{2,1}", "output": "b"}]}, "mappings[0].input: invalid regular"),
    ({"pattern": "r/a", "mappings": [{"input": "a" * 1025, "output": "b"}]}, "mappings[0].input: must be a non-empty"),
    ({"pattern": "r/a", "mappings": [{"input": "", "output": "b"}]}, "mappings[0].input: must be a non-empty"),
    (
        {"pattern": "r/a", "mappings": [{"input": "a", "output": 1}]},
        "queries[0].mappings[0].output: must be a non-empty",
    ),
    (
        {"pattern": "r/a", "mappings": [{"input": "(a)", "output": "s/$2"}]},
        "mappings[0].output: group $2 does not exist",
    ),
    (
        {"pattern": "r/a", "mappings": [{"input": "a", "output": "s/${1}"}]},
        "mappings[0].output: group $1 does not exist",
    ),
    ({"pattern": "r/a", "mappings": [{"input": "(a)", "output": "s/${v}"}]}, "output: group ${v} does not exist"),
    ({"pattern": "r/a", "mappings": [{"input": "a", "output": "s/$x"}]}, "output: '$' must be followed by a group"),
    ({"pattern": "r/a", "mappings": [{"input": "a", "output": "s/x$"}]}, "output: '$' must be followed by a group"),
    ({"pattern": "r/a", "mappings": [{"input": "a", "output": "s/x\\"}]}, "output: ends with a lone backslash"),
    # added props
    ({"pattern": "r/a", "added_props": {"k": "v"}}, "queries[0].added_props: must be a list"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "values": ["v"]}] * 101}, "added_props: has 101 entries"),
    ({"pattern": "r/a", "added_props": [["k", "v"]]}, "queries[0].added_props[0]: must be an object"),
    ({"pattern": "r/a", "added_props": [{"key": "", "values": []}]}, "queries[0].added_props[0].key: must be a non-"),
    ({"pattern": "r/a", "added_props": [{"key": "k" * 256, "values": []}]}, "added_props[0].key: must be a non-empty"),
    ({"pattern": "r/a", "added_props": [{"key": "k\n", "values": []}]}, "added_props[0].key: must be a non-empty"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "values": "v"}]}, "added_props[0].values: must be a list"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "values": None}]}, "added_props[0].values: must be a list"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "values": ["v", 1]}]}, "added_props[0].values[1]: must be a str"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "values": ["v" * 1025]}]}, "added_props[0].values[0]: must be"),
    ({"pattern": "r/a", "added_props": [{"key": "k", "value": "v"}]}, "added_props[0]: unknown key 'value'"),
]


@pytest.mark.parametrize(("fields", "message"), QUERY_REFUSALS)
def test_a_bad_query_is_refused_with_a_message_naming_the_part(fields: dict[str, Any], message: str) -> None:
    assert message in query_refusal(**fields)


def test_the_operator_message_lists_what_is_supported() -> None:
    message = query_refusal(aql='items.find({"name":{"$gt":"a"}})')
    assert message == "queries[0].aql: name: operator $gt is not supported (supported: $eq, $ne, $match, $nmatch)"


def test_one_source_mapped_to_a_file_and_to_a_folder_below_it_is_refused() -> None:
    with pytest.raises(SpecError, match="collide at target path 's/x/y'"):
        nest([("r/a", "s/x"), ("r/a", "s/x/y")])
