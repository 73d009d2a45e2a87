"""Replicas of one edge as real processes: ``edge serve`` several times on one PostgreSQL database
and one S3 bucket, behind one nginx running the shipped config (tests, benchmarks).

Each replica has a data directory of its own (its logs, its GnuPG home, scratch files), as a
replica on another machine would; everything the node knows is in the database and the bucket,
so a replica may be killed, restarted, or started again with an empty data directory.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .nginx import NginxProcess
from .services import EdgeProcess


def s3_environment(s3: Mapping[str, str], prefix: str, *, redirect: bool = False) -> dict[str, str]:
    """An edge's settings for blobs in ``s3``'s bucket under ``prefix`` (SeaweedFS's ``info``);
    ``redirect``: downloads answered with a presigned URL rather than the bytes."""
    return {
        "EDGE_STORAGE_BACKEND": "s3",
        "EDGE_STORAGE_ENDPOINT_URL": s3["endpoint_url"],
        "EDGE_STORAGE_BUCKET": s3["bucket"],
        "EDGE_STORAGE_PREFIX": prefix,
        "EDGE_STORAGE_REGION": s3["region"],
        "EDGE_STORAGE_ACCESS_KEY_ID": s3["access_key_id"],
        "EDGE_STORAGE_SECRET_ACCESS_KEY": s3["secret_access_key"],
        "EDGE_STORAGE_REDIRECT_DOWNLOADS": str(redirect).lower(),
    }


class EdgeReplicas:
    """``count`` replicas of one edge and the nginx in front of them; ``url`` is nginx's."""

    def __init__(
        self,
        base_dir: Path,
        *,
        database_url: str,
        s3: Mapping[str, str],
        prefix: str = "ha",
        count: int = 3,
        env: Mapping[str, str] | None = None,
        static_dir: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.static_dir = static_dir  # files nginx serves itself beside the replicas (nginx.STATIC_PREFIX)
        settings = {"EDGE_DATABASE_URL": database_url, **s3_environment(s3, prefix), **(env or {})}
        first = EdgeProcess(self.base_dir / "replica-1", env=settings)
        self.admin_token = first.admin_token
        self.replicas = [first] + [
            EdgeProcess(self.base_dir / f"replica-{n}", env=settings, admin_token=self.admin_token)
            for n in range(2, count + 1)
        ]
        self.nginx: NginxProcess | None = None

    @property
    def url(self) -> str:
        if self.nginx is None:
            raise RuntimeError("the replicas have not been started")
        return self.nginx.url

    def start(self) -> EdgeReplicas:
        for replica in self.replicas:  # one by one: the first makes the schema, the others find it
            replica.start()
        self.nginx = NginxProcess(
            self.base_dir / "nginx",
            [r.port or 0 for r in self.replicas],
            self.base_dir / "no-local-blobs",
            static_dir=self.static_dir,
        ).start()
        return self

    def kill(self, index: int) -> None:
        """SIGKILL a replica, as a crash or a lost machine would stop it."""
        replica = self.replicas[index]
        os.kill(replica.pid, signal.SIGKILL)
        replica.wait(30)

    def restart(self, index: int, *, empty: bool = False) -> None:
        """Start a stopped replica again on its port; ``empty``: with nothing left in its data directory."""
        replica = self.replicas[index]
        if empty:
            shutil.rmtree(replica.data_dir, ignore_errors=True)
        replica.start()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> EdgeReplicas:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
