"""The relay API of a parent edge (docs/tiers.md) refuses what it cannot do, in Artifactory's
error shape, and stores nothing; and the service's ``relay_timeout`` is validated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from distribution.settings import load_distribution_settings
from tests.edge_setup import distributor_token, http
from wire import protocol

TX = "a" * 64


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    with EdgeProcess(tmp_path_factory.mktemp("parent")) as started:
        yield started


def ask(edge: EdgeProcess, body: Any, token: str | None) -> tuple[int, Any]:
    return http("POST", edge.url + protocol.RELAYS, token, body)


def relay_body(**fields: Any) -> dict[str, Any]:
    return {"transaction_id": TX, "child": "leaf-1", "url": "http://127.0.0.1:1", "token": "t0k"} | fields


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"transaction_id": TX}, "exactly the fields"),
        (relay_body(colour="red"), "exactly the fields"),
        (relay_body(transaction_id="A" * 64), "64 lowercase hex digits"),
        (relay_body(child="has/slash"), "'child' must be an edge name"),
        (relay_body(url="ftp://x"), "http(s) base URL"),
        (relay_body(token="two words"), "'token' must be a non-empty string"),
        (relay_body(token=7), "'token' must be a non-empty string"),
    ],
)
def test_a_bad_relay_request_is_a_400_naming_the_flaw(edge: EdgeProcess, body: Any, words: str) -> None:
    status, answer = ask(edge, body, distributor_token(edge))
    assert status == 400 and answer["errors"][0]["status"] == 400
    assert words in answer["errors"][0]["message"]


def test_a_relay_of_a_transaction_the_edge_never_had_is_a_404_and_nothing_is_recorded(edge: EdgeProcess) -> None:
    token = distributor_token(edge)
    status, answer = ask(edge, relay_body(), token)
    assert status == 404 and answer["errors"][0]["message"] == f"No transaction {TX}"
    status, answer = http("GET", edge.url + protocol.relay_path(TX, "leaf-1"), token)
    assert status == 404 and "No relay" in answer["errors"][0]["message"]
    status, _ = http("POST", edge.url + protocol.relay_abort_path(TX, "leaf-1"), token)
    assert status == 404


def test_relays_need_a_distributor_token(edge: EdgeProcess) -> None:
    assert ask(edge, relay_body(), None)[0] == 401
    assert http("GET", edge.url + protocol.relay_path(TX, "leaf-1"))[0] == 401


@pytest.mark.parametrize(
    ("value", "ok"), [("0", False), ("0.5", False), ("1", True), ("86400", True), ("86401", False)]
)
def test_relay_timeout_is_1_to_86400_seconds(tmp_path: Path, value: str, ok: bool) -> None:
    env = {"DISTRIBUTION_RELAY_TIMEOUT": value}
    if ok:
        assert load_distribution_settings(env=env, data_dir=tmp_path).relay_timeout == float(value)
    else:
        with pytest.raises(ValueError, match="relay_timeout"):
            load_distribution_settings(env=env, data_dir=tmp_path)
