"""The runtime report's encoders and decoders, tested against each other, at their limits, and
refusing bad input by field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import fleet, runtime
from wire.errors import InvalidInput

names = st.from_regex(fleet.NAME_RE, fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
shas = st.from_regex(runtime.SHA256_RE, fullmatch=True)
processes = st.builds(
    runtime.Process,
    pid=st.integers(0, 2**31 - 1),
    started=st.integers(0, 2**63 - 1),
    exe=texts,
    sha256=st.none() | shas,
    user=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20),
    script=st.none() | texts,
    script_sha256=st.none() | shas,
    container=st.none() | texts,
    cmdline=st.none() | texts,
)
drifts = st.builds(
    runtime.AppDrift,
    app=names,
    version=texts,
    modified=st.lists(texts, max_size=3).map(tuple),
    missing=st.lists(texts, max_size=3).map(tuple),
    extra=st.lists(texts, max_size=3).map(tuple),
)
SHA = "a" * 64


def process(**changes: object) -> dict:
    return runtime.Process(1, 1000, "/usr/bin/till", SHA).to_json() | changes


def report(**changes: object) -> dict:
    return (
        runtime.RuntimeReport("till-0042", 1, 0, 5, (runtime.Process(1, 1000, "/usr/bin/till", SHA),)).to_json()
        | changes
    )


@given(
    started=st.lists(processes, max_size=5, unique_by=lambda p: p.key).map(tuple),
    stopped=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**40)), max_size=5).map(tuple),
    drift=st.none() | st.lists(drifts, max_size=3).map(tuple),
    truncated=st.booleans(),
    seq=st.integers(2, 2**40),
)
def test_a_delta_report_round_trips_through_its_encoding(started, stopped, drift, truncated, seq) -> None:
    sent = runtime.RuntimeReport("till-0042", seq, seq - 1, 7, started, stopped, truncated, drift)
    kept, data = runtime.encode_report(sent)
    assert kept == sent
    assert runtime.decode_report(data) == sent


@given(
    enabled=st.booleans(),
    interval=st.integers(runtime.MIN_INTERVAL, runtime.MAX_INTERVAL),
    exclude=st.lists(texts, max_size=runtime.MAX_EXCLUDE).map(tuple),
    drop=st.booleans(),
)
def test_runtime_settings_ride_in_the_check_in_answer(enabled, interval, exclude, drop) -> None:
    settings = runtime.RuntimeSettings(enabled, interval, exclude, drop)
    answer = fleet.CheckIn(30, (), "", settings)
    assert fleet.CheckIn.from_json(json.loads(json.dumps(answer.to_json()))) == answer


def test_a_check_in_answer_without_runtime_settings_still_parses_and_leaves_the_sensor_off() -> None:
    assert fleet.CheckIn.from_json({"poll_interval": 30}).runtime is None
    assert "runtime" not in fleet.CheckIn(30).to_json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (report(device="../x"), "device"),
        (report(seq=0), "seq"),
        (report(seq=3, base=3), "base"),
        (report(started=[process(pid=-1)]), "started[0] pid"),
        (report(started=[process(sha256="A" * 64)]), "started[0] sha256"),
        (report(started=[process(script_sha256="z")]), "started[0] script_sha256"),
        (report(started=[process(exe="")]), "started[0] exe"),
        (report(started=[process(exe="/bin/\x00x")]), "started[0] exe"),
        (report(started=[process(cmdline="x" * (runtime.MAX_CMDLINE + 1))]), "started[0] cmdline"),
        (report(started=[process(surprise=1)]), "started[0]"),
        (report(started=[process(), process()]), "started"),
        (report(stopped=[[1, 2]]), "stopped"),
        (report(seq=2, base=1, stopped=[[1]]), "stopped[0]"),
        (report(drift=[{"app": "till", "version": "1", "modified": "x"}]), "drift modified"),
        (report(truncated="yes"), "truncated"),
        (report(extra=1), "runtime report"),
    ],
)
def test_a_bad_report_is_refused_naming_its_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        runtime.RuntimeReport.from_json(body)
    assert refused.value.message.startswith(f"Invalid {field}:")


@pytest.mark.parametrize("count", [0, 1, runtime.MAX_PROCESSES - 1, runtime.MAX_PROCESSES])
def test_a_report_holds_up_to_the_process_cap(count: int) -> None:
    started = [process(pid=i) for i in range(count)]
    assert len(runtime.RuntimeReport.from_json(report(started=started)).started) == count


def test_a_report_over_the_process_cap_is_refused() -> None:
    started = [process(pid=i) for i in range(runtime.MAX_PROCESSES + 1)]
    with pytest.raises(InvalidInput, match="Invalid started: at most"):
        runtime.RuntimeReport.from_json(report(started=started))


@pytest.mark.parametrize("length", [0, 1, runtime.MAX_CMDLINE - 1, runtime.MAX_CMDLINE, runtime.MAX_CMDLINE + 1])
def test_command_lines_are_cut_to_the_limit(length: int) -> None:
    cut = runtime.cut_cmdline("x" * length)
    assert cut == "x" * min(length, runtime.MAX_CMDLINE)
    assert runtime.Process.from_json(process(cmdline=cut)).cmdline == cut


def test_control_characters_in_a_command_line_become_spaces() -> None:
    assert runtime.cut_cmdline("a\x00b\nc\x7f") == "a b c "


def test_a_report_over_the_byte_limit_is_cut_to_fit_and_says_truncated() -> None:
    long = "/" + "p" * (runtime.MAX_PATH - 1)
    many = tuple(
        runtime.Process(i, 1, long, SHA, script=long, script_sha256=SHA, cmdline="c" * runtime.MAX_CMDLINE)
        for i in range(runtime.MAX_PROCESSES)
    )
    kept, data = runtime.encode_report(runtime.RuntimeReport("till-0042", 1, 0, 5, many))
    assert len(data) <= runtime.MAX_REPORT_BYTES
    assert kept.truncated and 0 < len(kept.started) < len(many)
    assert kept.started == many[: len(kept.started)]
    assert runtime.decode_report(data) == kept


def test_a_report_of_more_bytes_than_the_limit_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(InvalidInput, match="more than"):
        runtime.decode_report(b" " * (runtime.MAX_REPORT_BYTES + 1))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"interval": runtime.MIN_INTERVAL - 1}, "interval"),
        ({"interval": runtime.MAX_INTERVAL + 1}, "interval"),
        ({"enabled": "no"}, "enabled"),
        ({"exclude": ["x"] * (runtime.MAX_EXCLUDE + 1)}, "exclude"),
        ({"exclude": [""]}, "exclude"),
        ({"drop_cmdline": 1}, "drop_cmdline"),
    ],
)
def test_bad_runtime_settings_are_refused_naming_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        runtime.RuntimeSettings.from_json(body)
    assert refused.value.message.startswith(f"Invalid {field}:")


def test_runtime_settings_an_operator_sends_with_an_unknown_field_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown field"):
        runtime.RuntimeSettings.from_json({"enabld": False}, strict=True)
