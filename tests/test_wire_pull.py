"""The pull protocol's bodies (wire/pull.py): what each encoder writes, its decoder reads back,
and every decoder refuses what breaks the contract, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wire import pull
from wire.errors import InvalidInput

SHA = "ab" * 32
ITEMS = [pull.WorkItem(1, pull.DISTRIBUTE, "app", "1.0"), pull.WorkItem(7, pull.DELETE, "app", "0.9")]
REPORTS = [
    pull.Report(pull.IN_PROGRESS, 0, 0),
    pull.Report(pull.IN_PROGRESS, 3, 4096, SHA),
    pull.Report(pull.COMPLETED, 3, 4096, SHA, published=pull.Published(3, 4096, "cd" * 32)),
    pull.Report(pull.COMPLETED, 0, 0),
    pull.Report(pull.FAILED, 0, 0, error="Blob refused"),
]


def over_the_wire(body: Any) -> Any:
    return json.loads(json.dumps(body))


@pytest.mark.parametrize("count", [0, 1, pull.WORK_PAGE - 1, pull.WORK_PAGE])
def test_a_work_list_up_to_its_page_reads_back_as_written(count: int) -> None:
    items = [pull.WorkItem(i + 1, pull.JOB_TYPES[i % 2], "app", f"{i}.0") for i in range(count)]
    assert pull.parse_work(over_the_wire(pull.work_body(items))) == items


def test_a_work_list_longer_than_its_page_is_refused() -> None:
    items = [pull.WorkItem(i + 1, pull.DISTRIBUTE, "app", "1") for i in range(pull.WORK_PAGE + 1)]
    with pytest.raises(InvalidInput, match="at most"):
        pull.parse_work(pull.work_body(items))


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "work"),
        ({"work": {}}, "work"),
        ({"work": [ITEMS[0].as_json() | {"type": "copy"}]}, "type"),
        ({"work": [ITEMS[0].as_json() | {"distribution_id": 0}]}, "distribution_id"),
        ({"work": [ITEMS[0].as_json() | {"distribution_id": True}]}, "distribution_id"),
        ({"work": [ITEMS[0].as_json() | {"name": ""}]}, "name"),
        ({"work": [{"distribution_id": 1}]}, "exactly"),
    ],
)
def test_a_bad_work_list_is_refused_naming_the_field(body: Any, names: str) -> None:
    with pytest.raises(InvalidInput, match=names):
        pull.parse_work(body)


@pytest.mark.parametrize("report", REPORTS)
def test_every_report_reads_back_as_written(report: pull.Report) -> None:
    assert pull.parse_report(over_the_wire(pull.report_body(report))) == report


@pytest.mark.parametrize("length", [0, 1, pull.MAX_ERROR - 1, pull.MAX_ERROR, pull.MAX_ERROR + 1])
def test_a_failed_reports_words_are_kept_up_to_their_limit(length: int) -> None:
    body = pull.report_body(pull.Report(pull.FAILED, 0, 0, error="x" * length))
    if 1 <= length <= pull.MAX_ERROR:
        assert pull.parse_report(body).error == "x" * length
    else:
        with pytest.raises(InvalidInput, match="error"):
            pull.parse_report(body)


def test_a_job_state_reads_back_as_written_and_says_whether_it_still_runs() -> None:
    for status, running in (("In queue", True), ("In progress", True), ("Completed", False), ("Failed", False)):
        state = pull.JobState(3, status, "aborted" if status == "Failed" else "")
        parsed = pull.parse_job_state(over_the_wire(pull.job_state_body(state)))
        assert (parsed, parsed.running) == (state, running)
    with pytest.raises(InvalidInput):
        pull.parse_job_state({"distribution_id": 3, "status": "Not distributed", "general_error": ""})


def test_a_credential_names_its_edge_only_in_its_own_form() -> None:
    secret = "0" * pull.SECRET_HEX
    assert pull.credential_edge(f"edge.eu-1.{secret}") == "edge.eu-1"
    for bad in ("", secret, f"edge.{secret}0", f"edge.{secret[1:]}", f".{secret}", "x" * 300 + "." + secret):
        assert pull.credential_edge(bad) == ""


def test_each_path_names_its_edge_and_quotes_what_it_must() -> None:
    assert pull.work_path("eu-1") == "/distribution/api/v1/pull/eu-1/work"
    assert pull.job_path("eu-1", 12) == "/distribution/api/v1/pull/eu-1/jobs/12"
    assert pull.manifest_path("eu-1", "my app", "1.0/x") == "/distribution/api/v1/pull/eu-1/manifests/my%20app/1.0%2Fx"
    assert pull.blob_path("eu-1", SHA) == f"/distribution/api/v1/pull/eu-1/blobs/{SHA}"
