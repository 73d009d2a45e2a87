"""The device protocol's encoders and decoders, tested against each other and at their limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import fleet
from wire.errors import InvalidInput

names = st.from_regex(fleet.NAME_RE, fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
sizes = st.integers(0, 2**63 - 1)
KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ\n-----END PGP PUBLIC KEY BLOCK-----\n"


def heartbeat(**changes) -> dict:
    body = fleet.Heartbeat("1.0", 5, 3, 100, 50, 1000, 900).to_json()
    return body | changes


@given(
    apps=st.dictionaries(names, st.builds(fleet.InstalledApp, st.none() | texts, st.none() | texts), max_size=5),
    action=st.none()
    | st.builds(
        fleet.ActionReport, st.from_regex(fleet.ACTION_ID_RE, fullmatch=True), st.sampled_from(fleet.FeedbackState)
    ),
    numbers=st.tuples(sizes, st.integers(0, 100), sizes, sizes, sizes, sizes),
)
def test_heartbeat_round_trip(apps, action, numbers) -> None:
    uptime, cpu, mt, mu, dt, df = numbers
    beat = fleet.Heartbeat("2.0", uptime, cpu, mt, mu, dt, df, apps, action)
    assert fleet.Heartbeat.from_json(beat.to_json()) == beat


@given(
    kind=st.sampled_from(fleet.ActionKind),
    version=st.none() | texts,
    window=st.none() | st.builds(fleet.Window, st.just("22:00"), st.just("04:30"), st.just("Europe/Lisbon")),
    keep=st.integers(2, 100),
)
def test_check_in_round_trip(kind, version, window, keep) -> None:
    app = fleet.AppSpec(
        "till",
        "till-app",
        "/opt/till",
        "true",
        "sh restart.sh",
        fleet.HealthCheck(url="http://127.0.0.1:9/h", timeout=5),
        keep,
    )
    answer = fleet.CheckIn(30, (fleet.Action("d1:dev1", kind, "d1", app, version, True, window),), "ab" * 32)
    assert fleet.CheckIn.from_json(answer.to_json()) == answer


@given(
    message=st.text(max_size=5000),
    state=st.sampled_from(fleet.FeedbackState),
    step=st.none() | st.sampled_from(fleet.FlowStep),
)
def test_feedback_round_trip_with_any_output(message, state, step) -> None:
    """Whatever a command printed, its clipped tail is a message the server accepts."""
    report = fleet.Feedback("a1", state, step, fleet.clip_message(message), "1.0", True, 3, 4, 5)
    assert fleet.Feedback.from_json(report.to_json()) == report


def test_message_limit() -> None:
    for length in (0, 1, fleet.MAX_MESSAGE - 1, fleet.MAX_MESSAGE):
        assert (
            fleet.Feedback.from_json({"action_id": "a", "state": "failed", "message": "x" * length}).message
            == "x" * length
        )
    with pytest.raises(InvalidInput, match="message"):
        fleet.Feedback.from_json({"action_id": "a", "state": "failed", "message": "x" * (fleet.MAX_MESSAGE + 1)})
    assert len(fleet.clip_message("y" * (fleet.MAX_MESSAGE + 1))) == fleet.MAX_MESSAGE


def test_sources_and_enrollment_round_trip() -> None:
    sources = fleet.Sources(
        "till-app",
        "2.3.0",
        '{"a":1}',
        "-----BEGIN PGP SIGNATURE-----\n\nx\n-----END PGP SIGNATURE-----\n",
        (fleet.EdgeOffer("edge-1", "http://127.0.0.1:1", "lisbon", None, "PT"),),
        (fleet.FileSource("generic-local/app/ünï code.sh", 0, "0" * 64, "t.o.k"),),
        123,
    )
    assert fleet.Sources.from_json(sources.to_json()) == sources
    enrollment = fleet.Enrollment("dev-1", "till-0042", "pos-emea", "secret", 30, (fleet.PublicKey("A" * 40, KEY),))
    assert fleet.Enrollment.from_json(enrollment.to_json()) == enrollment


def test_keys_document_round_trip_and_refusals() -> None:
    keys = (fleet.PublicKey("B" * 40, KEY), fleet.PublicKey("C" * 64, KEY))
    assert fleet.decode_keys_document(fleet.encode_keys_document(keys, 7)) == (7, keys)
    with pytest.raises(InvalidInput, match="lists no key"):
        fleet.decode_keys_document(fleet.encode_keys_document((), 7))
    with pytest.raises(InvalidInput, match="fingerprint"):
        fleet.decode_keys_document('{"created":1,"keys":[{"fingerprint":"abc","public_key":"x"}]}')


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (heartbeat(extra=1), "unknown field"),
        (heartbeat(cpu_percent=101), "cpu_percent"),
        (heartbeat(cpu_percent=1.5), "cpu_percent"),
        (heartbeat(uptime=-1), "uptime"),
        (heartbeat(uptime=True), "uptime"),
        (heartbeat(apps={"bad name": {"version": "1"}}), "app name"),
        (heartbeat(apps={"a": {"version": "1\n"}}), "control characters"),
        (heartbeat(action={"action_id": "a", "state": "done"}), "state"),
        ({k: v for k, v in heartbeat().items() if k != "disk_free"}, "missing"),
        ([], "JSON object"),
    ],
)
def test_bad_heartbeats_are_refused_by_name(body, problem) -> None:
    with pytest.raises(InvalidInput, match=problem):
        fleet.Heartbeat.from_json(body)


def test_enroll_request_limits() -> None:
    base = {"token": "t", "name": "till-0042"}
    assert fleet.EnrollRequest.from_json(base | {"tags": {}}).tags == {}
    for count in (1, fleet.MAX_TAGS - 1, fleet.MAX_TAGS):
        tags = {f"k{i}": "v" for i in range(count)}
        assert fleet.EnrollRequest.from_json(base | {"tags": tags}).tags == tags
    with pytest.raises(InvalidInput, match="tags"):
        fleet.EnrollRequest.from_json(base | {"tags": {f"k{i}": "v" for i in range(fleet.MAX_TAGS + 1)}})
    for name in ("a" * 64, "a", "a.b-c_d"):
        assert fleet.EnrollRequest.from_json(base | {"name": name}).name == name
    for name in ("", "a" * 65, "-a", "a/b", "ä"):
        with pytest.raises(InvalidInput, match="device name"):
            fleet.EnrollRequest.from_json(base | {"name": name})


def test_answers_ignore_unknown_fields_requests_do_not() -> None:
    assert fleet.CheckIn.from_json({"poll_interval": 5, "future": 1}).poll_interval == 5
    with pytest.raises(InvalidInput, match="unknown"):
        fleet.Feedback.from_json({"action_id": "a", "state": "failed", "future": 1})
    for interval in (0, fleet.MAX_POLL_SECONDS + 1):
        with pytest.raises(InvalidInput, match="poll_interval"):
            fleet.CheckIn.from_json({"poll_interval": interval})


def test_window_and_app_checks() -> None:
    app = {"name": "till", "bundle": "b", "install_dir": "/opt/till"}
    assert fleet.AppSpec.from_json(app).keep == 3
    with pytest.raises(InvalidInput, match="absolute"):
        fleet.AppSpec.from_json(app | {"install_dir": "opt/till"})
    for keep in (1, 101):
        with pytest.raises(InvalidInput, match="keep"):
            fleet.AppSpec.from_json(app | {"keep": keep})
    for bad in ("24:00", "9:00", "12:60"):
        with pytest.raises(InvalidInput, match="window"):
            fleet.Window.from_json({"start": bad, "end": "01:00"})


def test_download_url_quotes_each_segment() -> None:
    url = fleet.download_url("http://e:1/", "repo/a b/ü#?.sh", "x.y.z")
    assert url == "http://e:1/artifactory/repo/a%20b/%C3%BC%23%3F.sh?sig=x.y.z"
    assert fleet.sources_path("d1:dev/1") == "/fleet/api/v1/device/actions/d1%3Adev%2F1/sources"


def test_versions_in_the_order_people_number_them() -> None:
    ordered = ["0.9", "1.0.0-rc1", "1.0.0-rc2", "1.0", "1.0.1", "1.2", "1.9.2", "1.10.0", "2.0.0-alpha", "2.0.0"]
    assert sorted(reversed(ordered), key=fleet.version_key) == ordered
    assert fleet.version_key("1.0") == fleet.version_key("1.0.0") == fleet.version_key("1.0.0+build7")
    assert fleet.is_downgrade("2.3.0", "2.2.9") and not fleet.is_downgrade("2.3.0", "2.3.0")
    assert not fleet.is_downgrade(None, "0.1") and not fleet.is_downgrade("1.9", "1.10")


@given(st.lists(st.from_regex(r"[0-9a-z]{1,3}(\.[0-9a-z]{1,3}){0,3}(-[a-z0-9.]{1,5})?", fullmatch=True), max_size=6))
def test_version_order_is_total(versions) -> None:
    """Any two versions compare (no TypeError between numbers and words)."""
    assert len(sorted(versions, key=fleet.version_key)) == len(versions)
