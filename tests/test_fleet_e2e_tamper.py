"""A blob changed on disk under one edge's data dir: a real agent refuses that file by name,
reports it, takes it from the other edge, and installs the signed bytes.

The file is larger than what an edge checks in memory before serving it (64 KiB; a smaller
one the edge itself quarantines and refuses with a 409), so the edge sends the changed bytes."""

from __future__ import annotations

import hashlib

import psutil

from devstack.services import EdgeProcess
from tests.fleet_e2e import Devices, Plane, assert_whole, devices_fixture, plane_fixture  # noqa: F401

VERSION = "5.0.0"
PADDING = 1024 * 1024


def tamper(edge: EdgeProcess, data: bytes) -> None:
    """Change one byte in the middle of the blob holding ``data`` on ``edge``'s disk."""
    (blob,) = edge.data_dir.rglob(hashlib.sha256(data).hexdigest())
    blob.chmod(0o644)
    middle = len(data) // 2
    blob.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])


def processes(edge: EdgeProcess) -> list[psutil.Process]:
    parent = psutil.Process(edge.pid)
    return [parent, *parent.children(recursive=True)]


def test_a_tampered_blob_on_one_edge_is_refused_by_name_and_taken_from_the_other(
    plane: Plane, devices: Devices
) -> None:
    files = plane.release(VERSION, padding=PADDING)
    bad, good = plane.edges["edge-1"], plane.edges["edge-2"]
    target = f"fleet-demo/{VERSION}/payload.bin"
    tamper(bad, files[target])
    (agent,) = devices.add(1, probe_timeout=1)
    # the good edge is stopped (SIGSTOP) while the agent measures the edges: it answers last,
    # so the agent starts with the tampered one, and takes the refused file from the good one
    frozen = processes(good)
    for process in frozen:
        process.suspend()
    try:
        dep = devices.deploy(VERSION)
        refused = devices.wait(
            dep, lambda ds: "refused" in (ds[agent.name]["message"] or ""), "the device to report the refused file"
        )[agent.name]["message"]
    finally:
        for process in frozen:
            process.resume()
    assert f"refused releases-local/{target} from edge edge-1" in refused, refused
    assert "do not match the signed manifest" in refused
    devices.wait(dep, lambda ds: ds[agent.name]["state"] in ("succeeded", "failed"), "the device's final report")
    final = devices.targets(dep)[agent.name]
    assert (final["state"], final["version"]) == ("succeeded", VERSION), final
    assert_whole(agent, VERSION, files)
    assert agent.answer() == (200, VERSION)
