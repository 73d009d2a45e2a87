"""Memory of a real edge does not grow with file size: uploads and downloads stream.

This checks the edge's peak resident memory (VmHWM), which does not depend on
timing, after moving a file far larger than anything the server may buffer.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from devstack.services import EdgeProcess

MiB = 1024 * 1024
FILE_SIZE = 400 * MiB
# A fresh edge sits near 60 MiB; buffering the file would add 400 MiB.
PEAK_LIMIT = 200 * MiB


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def write_big_file(path: Path) -> str:
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as f:
        for i in range(FILE_SIZE // MiB):
            chunk = i.to_bytes(4, "big") + block[4:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def test_a_400_mib_upload_and_download_keep_the_edge_small(edge_server: EdgeProcess, tmp_path: Path) -> None:
    source, target = tmp_path / "big.bin", tmp_path / "back.bin"
    sha256 = write_big_file(source)
    url = f"{edge_server.artifactory_url}/artifactory-edge-uploads/big/big.bin"
    auth = f"Authorization: Bearer {edge_server.admin_token}"
    subprocess.run(
        ["curl", "-sS", "-f", "-H", auth, "-H", f"X-Checksum-Sha256: {sha256}", "-T", str(source), url],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # chunked too: no Content-Length, so nothing can be sized up front
    subprocess.run(
        ["curl", "-sS", "-f", "-H", auth, "-H", "Transfer-Encoding: chunked", "-T", str(source), url + ".2"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(["curl", "-sS", "-f", "-o", str(target), url], check=True, timeout=300)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha256
    peak = peak_rss(edge_server.pid)
    print(f"edge peak RSS {peak / MiB:.0f} MiB")
    assert peak < PEAK_LIMIT
