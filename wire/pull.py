"""The pull protocol: an edge on an inbound-only network asks the Distribution service for its work.

docs/transactions.md ("Pull mode") describes each call. This module holds what both sides
must spell the same way: the paths (each names the edge, so a credential works for its own
edge only), the credential header and its form, and the bodies of the work list, a job's
state and a status report, each with its encoder and its strict decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .errors import InvalidInput
from .protocol import SHA256_RE

PULL_API = "/distribution/api/v1/pull"
# The edge's credential, minted by the service at registration: "<edge name>.<secret>". It rides
# in a header of its own, never in Authorization, so it can never pass for a user's token.
CREDENTIAL_HEADER = "X-Edge-Credential"
SECRET_HEX = 64
MAX_CREDENTIAL = 256 + 1 + SECRET_HEX

DISTRIBUTE = "distribute"
DELETE = "delete_release_bundle_version"
JOB_TYPES = (DISTRIBUTE, DELETE)
# What an edge reports of a job: JFrog's status strings, the only ones a job ever shows.
IN_PROGRESS = "In progress"
COMPLETED = "Completed"
FAILED = "Failed"
REPORTED_STATES = (IN_PROGRESS, COMPLETED, FAILED)
MAX_ERROR = 2000
# Work items one poll answers at most; the next poll answers the rest.
WORK_PAGE = 100


def credential_edge(credential: str) -> str:
    """The edge a credential belongs to; one not of the form ``<name>.<secret>`` names none ("")."""
    name, _, secret = credential.rpartition(".")
    if len(credential) > MAX_CREDENTIAL or len(secret) != SECRET_HEX or not name:
        return ""
    return name


def _edge(edge: str) -> str:
    return f"{PULL_API}/{quote(edge, safe='')}"


def work_path(edge: str) -> str:
    """``GET``: the jobs addressed to the edge that are still to do (``parse_work``)."""
    return f"{_edge(edge)}/work"


def job_path(edge: str, distribution_id: int) -> str:
    """``GET``: a job's state (``parse_job_state``); ``POST``: a status report (``report_body``)."""
    return f"{_edge(edge)}/jobs/{distribution_id}"


def manifest_path(edge: str, name: str, version: str) -> str:
    """``GET``: the signed manifest's exact bytes, the signature in ``protocol.SIGNATURE_HEADER``."""
    return f"{_edge(edge)}/manifests/{quote(name, safe='')}/{quote(version, safe='')}"


def blob_path(edge: str, sha256: str) -> str:
    """``GET`` (with ``Range`` to resume): a blob of a bundle distributed to the edge."""
    return f"{_edge(edge)}/blobs/{sha256}"


@dataclass(frozen=True)
class WorkItem:
    """A job the edge is to run: a distribution to commit or a removal to apply."""

    distribution_id: int
    type: str
    name: str
    version: str

    def as_json(self) -> dict[str, Any]:
        return {"distribution_id": self.distribution_id, "type": self.type, "name": self.name, "version": self.version}


def work_body(items: list[WorkItem]) -> dict[str, Any]:
    return {"work": [i.as_json() for i in items]}


def _id(value: Any, what: str) -> int:
    if type(value) is not int or not 0 < value < 2**63:
        raise InvalidInput(f"'{what}' must be a positive integer")
    return value


def _string(value: Any, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidInput(f"'{what}' must be a non-empty string of at most {limit} characters")
    return value


def _exact(body: Any, fields: set[str], what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) != fields:
        raise InvalidInput(f"{what} must be a JSON object with exactly the fields {', '.join(sorted(fields))}")
    return body


def parse_work(body: Any) -> list[WorkItem]:
    """A work answer as its items; anything else is InvalidInput."""
    items = _exact(body, {"work"}, "A work answer")["work"]
    if not isinstance(items, list) or len(items) > WORK_PAGE:
        raise InvalidInput(f"'work' must be a list of at most {WORK_PAGE} jobs")
    parsed = []
    for item in items:
        item = _exact(item, {"distribution_id", "type", "name", "version"}, "A work item")
        if item["type"] not in JOB_TYPES:
            raise InvalidInput(f"'type' must be one of {', '.join(JOB_TYPES)}")
        parsed.append(
            WorkItem(
                _id(item["distribution_id"], "distribution_id"),
                item["type"],
                _string(item["name"], "name"),
                _string(item["version"], "version"),
            )
        )
    return parsed


@dataclass(frozen=True)
class JobState:
    """Where a job stands on the service: its JFrog status, and the error it ended with."""

    distribution_id: int
    status: str
    general_error: str

    @property
    def running(self) -> bool:
        return self.status in ("In queue", IN_PROGRESS)


def job_state_body(state: JobState) -> dict[str, Any]:
    return {"distribution_id": state.distribution_id, "status": state.status, "general_error": state.general_error}


def parse_job_state(body: Any) -> JobState:
    body = _exact(body, {"distribution_id", "status", "general_error"}, "A job state")
    if body["status"] not in ("In queue", *REPORTED_STATES) or not isinstance(body["general_error"], str):
        raise InvalidInput("A job state has a JFrog status and a 'general_error' string")
    return JobState(_id(body["distribution_id"], "distribution_id"), body["status"], body["general_error"])


@dataclass(frozen=True)
class Published:
    """What the edge serves of a committed bundle (wire/published.py's digest)."""

    files: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Report:
    """An edge's word on a job: progress while it runs (files and bytes the edge holds, or for a
    removal files removed), then Completed (a distribution with what it publishes) or Failed."""

    state: str
    distributed_files: int
    distributed_bytes: int
    transaction_id: str | None = None
    error: str = ""
    published: Published | None = None


def report_body(report: Report) -> dict[str, Any]:
    body: dict[str, Any] = {
        "state": report.state,
        "distributed_files": report.distributed_files,
        "distributed_bytes": report.distributed_bytes,
        "error": report.error,
    }
    if report.transaction_id is not None:  # absent until the edge opened it: no field is ever null
        body["transaction_id"] = report.transaction_id
    if report.published is not None:
        p = report.published
        body["published"] = {"files": p.files, "bytes": p.bytes, "sha256": p.sha256}
    return body


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise InvalidInput(f"'{what}' must be an integer of 0 or more")
    return value


def _published(value: Any) -> Published:
    value = _exact(value, {"files", "bytes", "sha256"}, "'published'")
    if not isinstance(value["sha256"], str) or not SHA256_RE.fullmatch(value["sha256"]):
        raise InvalidInput("'published.sha256' must be a sha256 (64 lowercase hex digits)")
    return Published(
        _count(value["files"], "published.files"), _count(value["bytes"], "published.bytes"), value["sha256"]
    )


def parse_report(body: Any) -> Report:
    """A status report; anything malformed is InvalidInput, so nothing is changed by it."""
    fields = {"state", "distributed_files", "distributed_bytes", "error"}
    if not isinstance(body, dict) or not fields <= set(body) <= fields | {"transaction_id", "published"}:
        raise InvalidInput(
            f"A report has the fields {', '.join(sorted(fields))}, 'transaction_id' once the edge opened"
            " its transaction and, once Completed, 'published'"
        )
    if body["state"] not in REPORTED_STATES:
        raise InvalidInput(f"'state' must be one of {', '.join(REPORTED_STATES)}")
    tx = body.get("transaction_id")
    if "transaction_id" in body and (not isinstance(tx, str) or not SHA256_RE.fullmatch(tx)):
        raise InvalidInput("'transaction_id' must be a sha256 (64 lowercase hex digits)")
    if not isinstance(body["error"], str) or len(body["error"]) > MAX_ERROR:
        raise InvalidInput(f"'error' must be a string of at most {MAX_ERROR} characters")
    if (body["state"] == FAILED) != bool(body["error"]):
        raise InvalidInput("'error' says why a job Failed, and is empty otherwise")
    published = _published(body["published"]) if "published" in body else None
    if published is not None and body["state"] != COMPLETED:
        raise InvalidInput("'published' comes with a Completed report only")
    return Report(
        body["state"],
        _count(body["distributed_files"], "distributed_files"),
        _count(body["distributed_bytes"], "distributed_bytes"),
        tx,
        body["error"],
        published,
    )
