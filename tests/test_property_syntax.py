"""The property string syntax: what a client writes is what the server reads, whatever the characters."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repository.property_syntax import (
    MAX_PROPERTIES_PER_FILE,
    MAX_PROPERTY_KEY_BYTES,
    MAX_PROPERTY_VALUE_CHARS,
    MAX_VALUES_PER_KEY,
    PropertySyntaxError,
    check_properties,
    format_keys,
    format_properties,
    parse_keys,
    parse_matrix,
    parse_properties,
    query_pairs,
)

# Any printable text, with the syntax's own characters made common.
_text = st.text(
    alphabet=st.one_of(st.sampled_from(";|,=/%\\ +&?#"), st.characters(blacklist_categories=("Cc", "Cs"))),
    max_size=20,
)
_keys = _text.filter(bool)
_props = st.dictionaries(_keys, st.lists(_text, min_size=1, max_size=5, unique=True), min_size=1, max_size=8)


@given(_props)
def test_a_property_string_reads_back_as_the_properties_it_was_written_from(props: dict[str, list[str]]) -> None:
    assert parse_properties(format_properties(props)) == props


@given(st.lists(_keys, min_size=1, max_size=8, unique=True))
def test_a_key_list_reads_back_as_the_keys_it_was_written_from(keys: list[str]) -> None:
    assert parse_keys(format_keys(keys)) == keys


@given(_props)
def test_a_percent_encoded_query_reads_back_exactly(props: dict[str, list[str]]) -> None:
    text = format_properties(props)
    assert query_pairs(f"x=1&properties={quote(text, safe='')}") == [("x", "1"), ("properties", text)]


@given(st.dictionaries(_keys, st.lists(_text, min_size=1, max_size=5, unique=True), min_size=1, max_size=8))
def test_matrix_parameters_read_back_as_dohq_artifactory_sends_them(props: dict[str, list[str]]) -> None:
    """dohq-artifactory quotes each key and value and repeats a key for each of its values."""
    raw = ";".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, values in props.items() for v in values)
    assert parse_matrix(raw) == props


def test_values_are_separated_by_pipe_or_comma_and_a_backslash_keeps_one_literal() -> None:
    assert parse_properties("a=1;b=2|3,4") == {"a": ["1"], "b": ["2", "3", "4"]}
    assert parse_properties(r"a=x\,y;b=p\|q\;r\=s") == {"a": ["x,y"], "b": ["p|q;r=s"]}
    assert parse_properties("a=") == {"a": [""]}
    assert parse_properties("a=1;a=2;a=1") == {"a": ["1", "2"]}
    assert parse_matrix("a=1,2;b=x%2Cy") == {"a": ["1", "2"], "b": ["x,y"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "No properties given"),
        ("=1", "a property key is empty"),
        ("a", "Malformed property 'a': expected key=value"),
        ("a=1;;b=2", "Malformed property '': expected key=value"),
        ("a=1\\", "ends with a lone backslash"),
        ("a\x01=1", "contains control characters"),
        ("a=1\n", "contains control characters"),
    ],
)
def test_a_malformed_property_string_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PropertySyntaxError, match=message) as refused:
        parse_properties(text)
    assert refused.value.status == 400


@pytest.mark.parametrize(("raw", "message"), [("a", "expected ;key=value"), ("=1", "key is empty"), ("a=%ff", "UTF-8")])
def test_malformed_matrix_parameters_are_refused(raw: str, message: str) -> None:
    with pytest.raises(PropertySyntaxError, match=message):
        parse_matrix(raw)


def test_a_query_that_is_not_utf_8_is_refused() -> None:
    with pytest.raises(PropertySyntaxError, match="not valid UTF-8"):
        query_pairs("properties=a%3D%C0%AF")


@pytest.mark.parametrize(
    ("limit", "make"),
    [
        (MAX_PROPERTIES_PER_FILE, lambda n: {f"k{i}": ["v"] for i in range(n)}),
        (MAX_VALUES_PER_KEY, lambda n: {"k": [str(j) for j in range(n)]}),
        (MAX_PROPERTY_KEY_BYTES, lambda n: {"é" * (n // 2) + "k" * (n % 2): ["v"]} if n else {"": ["v"]}),
        (MAX_PROPERTY_VALUE_CHARS, lambda n: {"k": ["v" * n]}),
    ],
    ids=["properties per file", "values per key", "key bytes", "value characters"],
)
def test_limits_hold_at_their_edges(limit: int, make: object) -> None:
    """0, 1, limit-1 and limit are accepted (an empty key never is); limit+1 is refused."""
    assert callable(make)
    for n in (0, 1, limit - 1, limit):
        if n == 0 and limit == MAX_PROPERTY_KEY_BYTES:
            with pytest.raises(PropertySyntaxError, match="key is empty"):
                check_properties(make(n))
            continue
        props = make(n)
        assert check_properties(props) == props
        if props and all(props.values()):
            assert parse_properties(format_properties(props)) == props
    with pytest.raises(PropertySyntaxError) as refused:
        check_properties(make(limit + 1))
    assert str(limit) in refused.value.message
