"""Every setting of the Distribution service, its default, and its checks.

Environment variables are ``DISTRIBUTION_<NAME>`` and ``DISTRIBUTION_STORAGE_<NAME>``,
e.g. ``DISTRIBUTION_ADMIN_TOKEN``, ``DISTRIBUTION_REPOS=releases-local,libs-local``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repository.settings import ServiceSettings, load_settings
from wire.errors import InvalidPath
from wire.fleet import MAX_POLL_SECONDS, MIN_POLL_SECONDS
from wire.manifest import MAX_ARTIFACTS
from wire.paths import check_repo_key
from wire.runtime import MAX_INTERVAL, MIN_INTERVAL

# heartbeats kept per device at most: the history of 50,000 devices stays a bounded table
MAX_HEARTBEAT_HISTORY = 10_000
# an SBOM is built in memory (the library's objects, then its text): 1 GiB at most
MAX_SBOM_BYTES = 1024**3


@dataclass(frozen=True)
class DistributionSettings(ServiceSettings):
    data_dir: Path = Path("dist-data")
    port: int = 8080
    node_id: str = "distribution"
    # source repos created at start (more with PUT /artifactory/api/repositories/{key})
    repos: tuple[str, ...] = ()
    # the most artifacts a spec may select; at most the MAX_ARTIFACTS a manifest may list, so
    # that every bundle that can be created can be signed and distributed
    max_bundle_artifacts: int = 50_000
    # the user id of the signing key made on first start, when no key exists yet
    signing_key_uid: str = "Distribution Service <distribution@localhost>"
    # pushing to edges: jobs running at once (one per edge), blob uploads at once per job; 8
    # uploads overlap the per-blob round trips and fsyncs of small blobs (measured faster than
    # 4 on 2 cores by bench/distribute.py), at one read buffer (1 MiB) per upload
    max_parallel_edges: int = 4
    max_parallel_blobs: int = 8
    # retries: the wait doubles up to this cap (s); an unreachable edge is retried until it
    # answers, an edge answering 5xx this many times in a row fails the job
    retry_backoff_cap: float = 30.0
    max_server_errors: int = 10
    # seconds to wait for an edge's next bytes before the call counts as a network error
    edge_read_timeout: float = 60.0
    # replicas sharing one database (database_url): a job runs where its lease is held, renewed
    # every third of this; a replica that stops renewing (a crash) loses its jobs to the others
    # after this many seconds
    job_lease_seconds: float = 30.0
    # tiers (docs/tiers.md): a child edge's job goes through its parent; when the parent has not
    # answered for this many seconds (dead, unreachable), the service pushes to the child directly
    relay_timeout: float = 300.0
    # fleet: how long the signed URLs minted for a device's download are good (s); a device asks
    # for fresh ones when they expire, so short is safe
    fleet_url_lifetime: int = 900
    # the fleet: seconds between a device's check-ins unless set for the device; a device is
    # offline after this many intervals without one; heartbeats kept per device (0: none)
    fleet_poll_interval: int = 30
    fleet_offline_after_polls: int = 3
    fleet_heartbeat_history: int = 100
    # runtime inventory: whether a group's devices report what they run unless set for the group,
    # and every how many seconds; reports kept per device; events kept in all
    fleet_runtime_enabled: bool = True
    fleet_runtime_interval: int = 60
    fleet_runtime_history: int = 100
    fleet_runtime_events: int = 10_000
    # webhooks (README "Webhooks"): attempts per delivery before it is given up; the first retry's
    # wait and the cap it doubles up to (s); seconds a receiver has to answer one delivery;
    # deliveries in flight at once (a receiver that hangs holds one); subscriptions at most; and the
    # URL clients reach this service by (behind a proxy), at which no webhook may point; days a
    # finished delivery stays in the log
    webhook_max_attempts: int = 10
    webhook_retry_base: float = 1.0
    webhook_retry_max: float = 600.0
    webhook_timeout: float = 10.0
    webhook_max_parallel: int = 8
    webhook_max_subscriptions: int = 100
    webhook_log_days: int = 30
    public_url: str | None = None
    # SBOMs (README "SBOMs"): the most bytes a bundle's CycloneDX SBOM may take (a bundle whose SBOM
    # would be larger is refused at creation), and the most bytes of a file of the bundle named like
    # an SBOM (*.cdx.json, bom.json, sbom.json) that is read to merge it (a larger one is refused)
    sbom_max_bytes: int = 64 * 1024 * 1024
    sbom_embedded_max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in self.repos:
            try:
                check_repo_key(key)
            except InvalidPath:
                raise ValueError(f"setting 'repos' holds an invalid repository key {key!r}") from None
        if not 1 <= self.max_bundle_artifacts <= MAX_ARTIFACTS:
            raise ValueError(
                f"setting 'max_bundle_artifacts' must be 1 to {MAX_ARTIFACTS}, the most artifacts a manifest may list"
            )
        if "<" not in self.signing_key_uid or not self.signing_key_uid.endswith(">"):
            raise ValueError("setting 'signing_key_uid' must look like 'Name <email>'")
        for key in ("max_parallel_edges", "max_parallel_blobs", "max_server_errors"):
            if not 1 <= getattr(self, key) <= 256:
                raise ValueError(f"setting '{key}' must be 1 to 256")
        if not 0.1 <= self.retry_backoff_cap <= 3600:
            raise ValueError("setting 'retry_backoff_cap' must be 0.1 to 3600 seconds")
        if not 0.1 <= self.edge_read_timeout <= 3600:
            raise ValueError("setting 'edge_read_timeout' must be 0.1 to 3600 seconds")
        if not 1 <= self.job_lease_seconds <= 3600:
            raise ValueError("setting 'job_lease_seconds' must be 1 to 3600 seconds")
        if not 1 <= self.relay_timeout <= 86400:
            raise ValueError("setting 'relay_timeout' must be 1 to 86400 seconds")
        if not 10 <= self.fleet_url_lifetime <= 86400:
            raise ValueError("setting 'fleet_url_lifetime' must be 10 to 86400 seconds")
        if not MIN_POLL_SECONDS <= self.fleet_poll_interval <= MAX_POLL_SECONDS:
            raise ValueError(f"setting 'fleet_poll_interval' must be {MIN_POLL_SECONDS} to {MAX_POLL_SECONDS} seconds")
        if not 1 <= self.fleet_offline_after_polls <= 100:
            raise ValueError("setting 'fleet_offline_after_polls' must be 1 to 100")
        if not 0 <= self.fleet_heartbeat_history <= MAX_HEARTBEAT_HISTORY:
            raise ValueError(f"setting 'fleet_heartbeat_history' must be 0 to {MAX_HEARTBEAT_HISTORY}")
        if not MIN_INTERVAL <= self.fleet_runtime_interval <= MAX_INTERVAL:
            raise ValueError(f"setting 'fleet_runtime_interval' must be {MIN_INTERVAL} to {MAX_INTERVAL} seconds")
        if not 0 <= self.fleet_runtime_history <= MAX_HEARTBEAT_HISTORY:
            raise ValueError(f"setting 'fleet_runtime_history' must be 0 to {MAX_HEARTBEAT_HISTORY}")
        if not 1 <= self.fleet_runtime_events <= 1_000_000:
            raise ValueError("setting 'fleet_runtime_events' must be 1 to 1000000")
        if not 1 <= self.sbom_max_bytes <= MAX_SBOM_BYTES:
            raise ValueError(f"setting 'sbom_max_bytes' must be 1 to {MAX_SBOM_BYTES}")
        if not 0 <= self.sbom_embedded_max_bytes <= self.sbom_max_bytes:
            raise ValueError("setting 'sbom_embedded_max_bytes' must be 0 to sbom_max_bytes")
        self._check_webhooks()

    def _check_webhooks(self) -> None:
        if not 1 <= self.webhook_max_attempts <= 1000:
            raise ValueError("setting 'webhook_max_attempts' must be 1 to 1000")
        if not 0.01 <= self.webhook_retry_base <= 3600:
            raise ValueError("setting 'webhook_retry_base' must be 0.01 to 3600 seconds")
        if not self.webhook_retry_base <= self.webhook_retry_max <= 86400:
            raise ValueError("setting 'webhook_retry_max' must be webhook_retry_base to 86400 seconds")
        if not 0.1 <= self.webhook_timeout <= 300:
            raise ValueError("setting 'webhook_timeout' must be 0.1 to 300 seconds")
        if not 1 <= self.webhook_max_parallel <= 256:
            raise ValueError("setting 'webhook_max_parallel' must be 1 to 256")
        if not 0 <= self.webhook_max_subscriptions <= 10_000:
            raise ValueError("setting 'webhook_max_subscriptions' must be 0 to 10000")
        if not 1 <= self.webhook_log_days <= 3650:
            raise ValueError("setting 'webhook_log_days' must be 1 to 3650")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("setting 'public_url' must be an http(s) URL with a host")

    @property
    def gnupg_dir(self) -> Path:
        return self.data_dir / "gnupg"

    @property
    def fleet_url_key_path(self) -> Path:
        """The fleet's URL-signing key (``fleet/rollout_url_key.py``), made on first start."""
        return self.data_dir / "fleet-url-key.pem"

    @property
    def replica_id_path(self) -> Path:
        """This replica's name in job leases, kept across restarts (``distribution.app``)."""
        return self.data_dir / "replica-id"


def load_distribution_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> DistributionSettings:
    return load_settings(
        DistributionSettings,
        config_file=config_file,
        env=os.environ if env is None else env,
        env_prefix="DISTRIBUTION_",
        overrides=flags,
    )
