"""One strict JSON parser (wire/jsonstrict.py) for every body, manifest and token a node reads.

What it refuses, every reader refuses: a key given twice (parsers disagree on which one
counts), NaN and Infinity (not JSON), bytes that are not UTF-8, and, where integers are
asked for, any float. Each refusal says what and where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distribution.cli import main as distribution_cli
from tests.conftest import admin, error_of
from wire.jsonstrict import JsonRefused, loads, loads_prefix


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b'{"a":1,"a":1}', "duplicate key 'a'"),
        (b'{"a":[{"b":1,"b":2}]}', "duplicate key 'b'"),
        (b'{"a":NaN}', "NaN is not allowed"),
        (b"[Infinity]", "Infinity is not allowed"),
        (b"-Infinity", "-Infinity is not allowed"),
        (b'{"a":"\xff"}', "not valid UTF-8 at byte 6"),
        (b'{"a":1} {}', "Extra data at character 8"),
        (b'{"a":}', "Expecting value at character 5 (line 1 column 6)"),
        (b"", "Expecting value at character 0"),
        (b"[" * 100_000, "nested too deeply"),
        (b"1" * 5000, "cannot be parsed"),
    ],
)
def test_what_is_not_strict_json_is_refused_saying_what_and_where(text: bytes, says: str) -> None:
    with pytest.raises(JsonRefused) as caught:
        loads(text)
    assert says in caught.value.problem
    assert caught.value.status == 400 and caught.value.message == f"Invalid JSON: {caught.value.problem}"


def test_floats_are_refused_only_where_integers_are_asked_for() -> None:
    assert loads(b"[1.5, 2]") == [1.5, 2]
    assert loads(b"[1, 2]", floats=False) == [1, 2]
    with pytest.raises(JsonRefused, match=r"floats are not allowed \('1e3'\)"):
        loads(b"[1e3]", floats=False)


def test_strict_json_reads_like_json_otherwise() -> None:
    assert loads(' \n{"a": [true, null, "é"]}\r\n') == {"a": [True, None, "é"]}
    assert loads_prefix('find({"a":1}) rest', 5) == ({"a": 1}, 12)


async def test_a_request_body_with_a_key_given_twice_is_a_400_and_changes_nothing(edge: Any) -> None:
    """Once the last ``role`` won: a token asked for as reader could come out admin."""
    before = await (await edge.get("/access/api/v1/tokens", headers=admin())).json()
    resp = await edge.post(
        "/access/api/v1/tokens",
        data=b'{"username":"ci","role":"reader","role":"admin"}',
        headers={**admin(), "Content-Type": "application/json"},
    )
    status, message = await error_of(resp)
    assert status == 400 and message == "Request body is not valid JSON: duplicate key 'role'"
    assert await (await edge.get("/access/api/v1/tokens", headers=admin())).json() == before


async def test_a_request_body_with_nan_is_a_400_naming_it(edge: Any) -> None:
    resp = await edge.post(
        "/access/api/v1/tokens",
        data=b'{"username":"ci","expires_in":NaN}',
        headers={**admin(), "Content-Type": "application/json"},
    )
    assert await error_of(resp) == (400, "Request body is not valid JSON: NaN is not allowed")


def test_the_cli_reads_a_spec_file_as_strictly_as_the_service_and_says_why(tmp_path: Path) -> None:
    """Read loosely, the CLI would send on only the last of two ``queries`` without a word."""
    spec = tmp_path / "spec.json"
    spec.write_bytes(b'{"queries":[{"pattern":"releases-local/a/*"}],"queries":[{"pattern":"releases-local/b/*"}]}')
    args = ["bundle", "create", "app", "1.0", "--spec", str(spec), "--url", "http://127.0.0.1:9", "--token", "t"]
    result = CliRunner().invoke(distribution_cli, args)
    assert result.exit_code == 2
    assert "Invalid JSON: duplicate key 'queries'" in result.output
