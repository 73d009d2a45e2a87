"""The runtime inventory on the control plane: reports stored bounded, provenance from the
bundle tables, events, group settings, and bad reports refused with nothing stored."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest

from tests.conftest import admin
from tests.fleet_deploy import REPO
from tests.fleet_rows import add_device, device_auth
from tests.fleet_setup import check_in, enrolled, refusal, role_headers
from tests.runtime_plane import BASE, README, ROGUE, get, plane_fixture, rogue, rows, send, till  # noqa: F401
from wire.runtime import MAX_REPORT_BYTES, RUNTIME, AppDrift, Process, RuntimeReport


async def test_a_process_of_a_bundle_file_is_found_where_that_version_runs_and_others_are_unknown(plane: Any) -> None:
    assert await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(), rogue()))) == {"seq": 1, "full": False}
    where = await get(plane, "/where/app/2.3.0")
    assert [(w["device"], w["pid"], w["path"]) for w in where] == [("till-1", 10, f"{REPO}/app/2.3.0/till.bin")]
    device = await get(plane, "/devices/till-1")
    by_pid = {p["pid"]: p for p in device["processes"]}
    assert by_pid[10]["provenance"] == [{"bundle": "app", "version": "2.3.0", "path": f"{REPO}/app/2.3.0/till.bin"}]
    assert by_pid[10]["unknown"] is False and by_pid[20]["unknown"] is True
    unknown = await get(plane, "/unknown")
    assert unknown == [
        {"sha256": ROGUE, "path": "/tmp/sleep", "devices": ["till-1"], "device_count": 1, "processes": 1}
    ]
    assert await get(plane, "/unknown", group="lab") == []


async def test_a_script_run_by_an_interpreter_is_traced_by_the_script_not_the_interpreter(plane: Any) -> None:
    python = Process(5, 1, "/usr/bin/python3", ROGUE, script="README.md", script_sha256=README)
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (python,)))
    assert [w["path"] for w in await get(plane, "/where/app/2.3.0")] == [f"{REPO}/app/2.3.0/README.md"]
    assert await get(plane, "/unknown") == []


async def test_a_delta_removes_what_stopped_and_where_no_longer_lists_it(plane: Any) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(),)))
    assert await send(plane, "till-1", RuntimeReport("till-1", 2, 1, 6, (), ((10, 1000),))) == {"seq": 2, "full": False}
    assert await get(plane, "/where/app/2.3.0") == []
    changes = await get(plane, "/devices/till-1/changes")
    assert [(c["seq"], c["full"], c["stopped"]) for c in changes] == [(2, False, [[10, 1000]]), (1, True, [])]


async def test_a_delta_on_a_report_the_control_plane_does_not_hold_asks_for_a_full_one_and_stores_nothing(
    plane: Any,
) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(),)))
    before = await rows(plane)
    assert await send(plane, "till-1", RuntimeReport("till-1", 8, 7, 6, (rogue(),))) == {"seq": 1, "full": True}
    assert await rows(plane) == before


@pytest.mark.parametrize("reports", [1, 2, 3])
async def test_the_history_of_changes_keeps_the_newest_reports_only(plane: Any, reports: int) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(1),)))
    for seq in range(2, reports + 1):
        await send(plane, "till-1", RuntimeReport("till-1", seq, seq - 1, 5, (till(seq),)))
    changes = await get(plane, "/devices/till-1/changes")
    assert [c["seq"] for c in changes] == list(range(reports, max(0, reports - 2), -1))


async def test_an_unknown_executable_starting_is_one_event_per_device_while_it_runs(plane: Any) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(), rogue())))
    await send(plane, "till-1", RuntimeReport("till-1", 2, 1, 6, (rogue(21, 2100),)))  # the same binary again
    await send(plane, "till-2", RuntimeReport("till-2", 1, 0, 7, (rogue(),)))
    events = await get(plane, "/events")
    assert [(e["device"], e["kind"], e["sha256"], e["path"]) for e in events] == [
        ("till-1", "unknown_executable", ROGUE, "/tmp/sleep"),
        ("till-2", "unknown_executable", ROGUE, "/tmp/sleep"),
    ]
    assert [e["device"] for e in await get(plane, "/events", after=str(events[0]["id"]))] == ["till-2"]
    assert await get(plane, "/events", kind="drift") == []


async def test_events_are_kept_up_to_their_limit_the_newest_first_to_stay(plane: Any) -> None:
    for n in range(5):
        sha = hashlib.sha256(str(n).encode()).hexdigest()
        await send(plane, "till-1", RuntimeReport("till-1", 1, 0, n, (Process(n, 1, f"/bin/x{n}", sha),)))
    assert [e["path"] for e in await get(plane, "/events")] == ["/bin/x2", "/bin/x3", "/bin/x4"]


async def test_drift_is_stored_as_reported_listed_and_an_event_when_new(plane: Any) -> None:
    drift = (AppDrift("till", "2.3.0", modified=("till.bin",), extra=("evil.sh",)),)
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (), drift=drift))
    await send(plane, "till-1", RuntimeReport("till-1", 2, 1, 6, (till(),), drift=drift))  # the same: no new event
    listed = await get(plane, "/drift")
    assert [(d["device"], d["app"], d["version"], d["kind"], d["path"]) for d in listed] == [
        ("till-1", "till", "2.3.0", "extra", "evil.sh"),
        ("till-1", "till", "2.3.0", "modified", "till.bin"),
    ]
    events = await get(plane, "/events", kind="drift")
    assert sorted((e["path"], e["change"]) for e in events) == [("evil.sh", "extra"), ("till.bin", "modified")]
    assert (await get(plane, "/devices/till-1"))["drift"] == listed
    await send(plane, "till-1", RuntimeReport("till-1", 3, 2, 7, drift=(AppDrift("till", "2.3.0"),)))
    assert await get(plane, "/drift") == []


async def test_a_revoked_device_is_refused_with_401_and_nothing_stored(plane: Any) -> None:
    await add_device(plane.app, "gone", revoked=True)
    before = await rows(plane)
    resp = await plane.post(
        RUNTIME, json=RuntimeReport("gone", 1, 0, 5, (rogue(),)).to_json(), headers=device_auth("gone")
    )
    assert (await refusal(resp))[0] == 401
    assert await rows(plane) == before


async def test_a_report_claiming_another_device_is_refused_and_nothing_stored(plane: Any) -> None:
    before = await rows(plane)
    resp = await plane.post(
        RUNTIME, json=RuntimeReport("till-2", 1, 0, 5, (rogue(),)).to_json(), headers=device_auth("till-1")
    )
    status, message = await refusal(resp)
    assert status == 403 and "till-1" in message and "till-2" in message
    assert await rows(plane) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"device": "till-1", "seq": 1, "base": 0}, "missing field(s) 'time'"),
        ({"device": "till-1", "seq": 1, "base": 0, "time": 5, "started": [{"pid": 1}]}, "started[0]"),
        ({"device": "till-1", "seq": 1, "base": 0, "time": 5, "started": "x"}, "Invalid started"),
    ],
)
async def test_a_malformed_report_is_a_400_naming_the_field_and_nothing_stored(
    plane: Any, body: dict[str, Any], field: str
) -> None:
    before = await rows(plane)
    resp = await plane.post(RUNTIME, json=body, headers=device_auth("till-1"))
    status, message = await refusal(resp)
    assert status == 400 and field in message
    assert await rows(plane) == before


async def test_an_oversized_report_is_a_413_and_nothing_stored(plane: Any) -> None:
    before = await rows(plane)
    resp = await plane.post(
        RUNTIME, data=io.BytesIO(b"{" + b" " * MAX_REPORT_BYTES + b"}"), headers=device_auth("till-1")
    )
    assert (await refusal(resp))[0] == 413
    assert await rows(plane) == before


async def test_where_a_bundle_version_that_does_not_exist_runs_is_a_404(plane: Any) -> None:
    resp = await plane.get(f"{BASE}/where/app/9.9.9", headers=admin())
    assert (await refusal(resp))[0] == 404


async def test_a_groups_runtime_settings_reach_its_devices_in_the_check_in_answer(plane: Any) -> None:
    credential = await enrolled(plane, "till-9", "pos")
    default = (await (await check_in(plane, credential)).json())["runtime"]
    assert default == {"enabled": True, "interval": 60, "exclude": [], "drop_cmdline": False}
    body = {"enabled": False, "interval": 30, "exclude": ["/usr/sbin/*"], "drop_cmdline": True}
    resp = await plane.put(f"{BASE}/groups/pos", json=body, headers=admin())
    assert resp.status == 200, await resp.text()
    assert (await (await check_in(plane, credential)).json())["runtime"] == body
    assert (await get(plane, "/groups/lab"))["enabled"] is True


async def test_only_an_admin_sets_a_groups_runtime_settings_and_bad_ones_are_400(plane: Any) -> None:
    reader = await role_headers(plane, "reader")
    resp = await plane.put(f"{BASE}/groups/pos", json={"enabled": False}, headers=reader)
    assert (await refusal(resp))[0] == 403
    resp = await plane.put(f"{BASE}/groups/pos", json={"interval": 0}, headers=admin())
    status, message = await refusal(resp)
    assert status == 400 and "interval" in message
    assert (await get(plane, "/groups/pos"))["enabled"] is True


@pytest.mark.parametrize(("limit", "status"), [("0", 400), ("1", 200), ("999", 200), ("1000", 200), ("1001", 400)])
async def test_the_event_list_takes_a_limit_from_1_to_1000(plane: Any, limit: str, status: int) -> None:
    resp = await plane.get(f"{BASE}/events", params={"limit": limit}, headers=admin())
    assert resp.status == status, await resp.text()


async def test_unknown_executables_come_in_pages_in_sha256_order_with_their_devices_counted(plane: Any) -> None:
    shas = sorted(hashlib.sha256(str(n).encode()).hexdigest() for n in range(3))
    processes = tuple(Process(n, 1, f"/bin/x{n}", sha) for n, sha in enumerate(shas))
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, processes))
    await send(plane, "till-2", RuntimeReport("till-2", 1, 0, 5, processes[:1]))
    first = await get(plane, "/unknown", limit="2")
    assert [(u["sha256"], u["device_count"], u["devices"]) for u in first] == [
        (shas[0], 2, ["till-1", "till-2"]),
        (shas[1], 1, ["till-1"]),
    ]
    assert [u["sha256"] for u in await get(plane, "/unknown", limit="2", after=shas[1])] == [shas[2]]
    assert [u["device_count"] for u in await get(plane, "/unknown", group="lab")] == [1]
    for after in ("zz", ""):
        resp = await plane.get(f"{BASE}/unknown", params={"after": after}, headers=admin())
        assert (await refusal(resp))[0] == 400


async def test_where_a_version_runs_comes_a_page_of_devices_at_a_time_never_splitting_one(plane: Any) -> None:
    await send(plane, "till-1", RuntimeReport("till-1", 1, 0, 5, (till(10), till(11))))
    await send(plane, "till-2", RuntimeReport("till-2", 1, 0, 5, (till(12),)))
    first = await get(plane, "/where/app/2.3.0", limit="1")
    assert [(w["device"], w["pid"]) for w in first] == [("till-1", 10), ("till-1", 11)]
    assert [(w["device"], w["pid"]) for w in await get(plane, "/where/app/2.3.0", limit="1", after="till-1")] == [
        ("till-2", 12)
    ]
    for params in ({"limit": "0"}, {"after": "../x"}, {"surprise": "1"}):
        resp = await plane.get(f"{BASE}/where/app/2.3.0", params=params, headers=admin())
        assert (await refusal(resp))[0] == 400
