"""Every setting of an edge node, its default, and its checks.

Environment variables are ``EDGE_<NAME>`` and ``EDGE_STORAGE_<NAME>`` for the
storage section, e.g. ``EDGE_ADMIN_TOKEN``, ``EDGE_STORAGE_BACKEND=s3``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repository.settings import InvalidSetting, ServiceSettings, load_settings

from .access.address import FORWARDED_HEADERS, parse_network
from .access.rules import GEO_NEEDS_DATABASE, GEO_UNKNOWN, RuleSpec
from .access.signed_urls import ALGORITHMS, UrlKeySpec
from .pull_settings import PullSettings

MiB = 1024 * 1024
MAX_REMOVAL_FILES_PER_REQUEST = 1_000_000
DAY = 24 * 3600
# More worker processes than this is a typo, not a machine: each holds its database
# connections, receiver threads and caches.
MAX_WORKERS = 64


def one_per_core() -> int:
    """The default number of workers: the cores this process may run on (its CPU affinity)."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


# An nginx location prefix: '/', segments of URL-safe characters, a closing '/'; no dot segments.
ACCEL_PREFIX = re.compile(r"/(?:(?!\.{1,2}/)[A-Za-z0-9._~-]+/)+")


@dataclass(frozen=True)
class SignedUrlSettings:
    """``[access.signed_urls]``: how this edge issues and checks signed URLs."""

    # EdDSA: this edge's own Ed25519 key signs; HS256: the first key with a `secret` signs
    algorithm: str = "EdDSA"
    # the longest lifetime a URL may be issued with (and is accepted with), in seconds
    max_lifetime: int = 7 * DAY
    # seconds of clock difference forgiven on `exp` and `iat`
    leeway: int = 60
    # the `iss` of URLs issued here (default: node_id)
    issuer: str | None = None
    # how clients reach this edge, e.g. https://edge.example.com (default: the request's own scheme and host)
    base_url: str | None = None
    # other issuers' public keys and HS256 secrets, by kid
    keys: tuple[UrlKeySpec, ...] = ()

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidSetting("algorithm", f"must be one of {', '.join(ALGORITHMS)}")
        if not 1 <= self.max_lifetime <= 365 * DAY:
            raise InvalidSetting("max_lifetime", f"must be 1 to {365 * DAY} seconds")
        if not 0 <= self.leeway <= 3600:
            raise InvalidSetting("leeway", "must be 0 to 3600 seconds")
        if self.base_url is not None and (
            not self.base_url.startswith(("http://", "https://")) or any(c in self.base_url for c in "?#")
        ):
            raise InvalidSetting("base_url", "must be an http:// or https:// URL without query or fragment")
        if self.algorithm == "HS256" and not any(k.secret for k in self.keys):
            raise InvalidSetting("algorithm", "HS256 needs a key with a 'secret' in [[access.signed_urls.keys]]")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise InvalidSetting("keys", "names one kid twice")


@dataclass(frozen=True)
class AccessSettings:
    """``[access]``: client address, IP and geo rules, signed URLs."""

    # proxies whose forwarding header is believed (CIDRs); nobody's by default
    trusted_proxies: tuple[str, ...] = ()
    # the header those proxies write: X-Forwarded-For or Forwarded (RFC 7239)
    forwarded_header: str = "X-Forwarded-For"
    # a MaxMind-format country database, reloaded when the file changes
    geoip_database: Path | None = None
    # the answer where a geo rule applies and the country is unknown: deny or allow
    geo_unknown: str = "deny"
    # a database built longer ago than this many days fails readiness (0: never)
    geoip_max_age_days: int = 30
    # the initial rule set; the admin API replaces it at run time
    rules: tuple[RuleSpec, ...] = ()
    signed_urls: SignedUrlSettings = field(default_factory=SignedUrlSettings)

    def __post_init__(self) -> None:
        for cidr in self.trusted_proxies:
            try:
                parse_network(cidr)
            except ValueError as exc:
                raise InvalidSetting("trusted_proxies", f"has a bad entry: {exc}") from None
        if self.forwarded_header not in FORWARDED_HEADERS:
            raise InvalidSetting("forwarded_header", f"must be one of {', '.join(FORWARDED_HEADERS)}")
        if self.geo_unknown not in GEO_UNKNOWN:
            raise InvalidSetting("geo_unknown", f"must be one of {', '.join(GEO_UNKNOWN)}")
        if not 0 <= self.geoip_max_age_days <= 3650:
            raise InvalidSetting("geoip_max_age_days", "must be 0 (no limit) to 3650 days")
        if self.geoip_database is None and any(rule.uses_geo for rule in self.rules):
            raise InvalidSetting("rules", f"has country rules, which cannot work: {GEO_NEEDS_DATABASE}")


@dataclass(frozen=True)
class AuditSettings:
    """``[audit]``: the record of every decision and download."""

    # off: nothing is recorded (records already kept can still be read, and are still pruned)
    enabled: bool = True
    # seconds between writes of queued records (and a write at shutdown); at most 1
    flush_interval: float = 0.5
    # records older than this many days are removed, checked hourly; 0 keeps them forever
    retention_days: int = 365

    def __post_init__(self) -> None:
        if not 0.01 <= self.flush_interval <= 1.0:
            raise InvalidSetting("flush_interval", "must be 0.01 to 1 second")
        if not 0 <= self.retention_days <= 100 * 365:
            raise InvalidSetting("retention_days", "must be 0 (keep forever) to 36500 days")


@dataclass(frozen=True)
class EdgeSettings(ServiceSettings):
    data_dir: Path = Path("edge-data")
    port: int = 8082
    node_id: str = "edge"
    # whether anyone may download from artifactory-edge-uploads without a token
    uploads_anonymous_read: bool = True
    # seconds a distribution transaction may stay uncommitted before it expires and its staging goes
    transaction_ttl: int = 24 * 3600
    # largest body of a transaction start (the manifest as a JSON string, plus its signature)
    max_manifest_bytes: int = 96 * MiB
    # a blob upload receiving fewer than upload_min_rate bytes/s in one of the consecutive
    # upload_rate_window-second windows from the start of its body, or still running
    # upload_deadline seconds after its body began, is cut off (408) and its staged bytes are
    # freed; 0 turns either rule off
    upload_min_rate: int = 10 * 1024
    upload_rate_window: float = 30.0
    upload_deadline: float = 3600.0
    # nginx's internal location that serves the blob directory (e.g. "/_blobs/"): downloads of
    # local blobs asked for by that nginx (X-Sendfile-Type: X-Accel-Redirect) are then sent by
    # nginx, the edge answering only the headers and X-Accel-Redirect; "" (the default) is off
    accel_redirect: str = ""
    # processes serving the port (edge/workers.py): one per core by default; 1 is a single
    # process, with no supervisor
    workers: int = field(default_factory=one_per_core)
    # files of a bundle one DELETE of it removes at most (its blobs collected as it goes); the
    # Distribution service calls again until the removal is done, so each request stays short
    removal_files_per_request: int = 5000
    # smart remote repos (edge/remote/): the bytes their caches hold together at most (least
    # recently used files are dropped beyond it); seconds to connect to an upstream; seconds a
    # whole fetch from an upstream may take; seconds between reports of cached-hit downloads to
    # upstreams that asked for statistics
    remote_cache_max_bytes: int = 10 * 1024 * MiB
    remote_connect_timeout: float = 10.0
    remote_fetch_deadline: float = 3600.0
    remote_stats_interval: float = 30.0
    access: AccessSettings = field(default_factory=AccessSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    # pull mode: the edge polls the Distribution service for its work (edge/pull_settings.py)
    pull: PullSettings = field(default_factory=PullSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InvalidSetting("workers", f"must be 1 to {MAX_WORKERS}")
        if self.transaction_ttl < 1:
            raise ValueError("setting 'transaction_ttl' must be at least 1 second")
        if self.max_manifest_bytes < 1024:
            raise ValueError("setting 'max_manifest_bytes' must be at least 1024")
        if self.upload_min_rate < 0 or self.upload_deadline < 0:
            raise ValueError("settings 'upload_min_rate' and 'upload_deadline' must be 0 (off) or more")
        if not 0 < self.upload_rate_window <= 3600:
            raise ValueError("setting 'upload_rate_window' must be more than 0 and at most 3600 seconds")
        if not 1 <= self.removal_files_per_request <= MAX_REMOVAL_FILES_PER_REQUEST:
            raise ValueError(f"setting 'removal_files_per_request' must be 1 to {MAX_REMOVAL_FILES_PER_REQUEST} files")
        if self.remote_cache_max_bytes < 0:
            raise InvalidSetting("remote_cache_max_bytes", "must be 0 or more bytes")
        if not 0 < self.remote_connect_timeout <= 3600 or not 0 < self.remote_fetch_deadline <= 7 * DAY:
            raise InvalidSetting("remote_connect_timeout", "and remote_fetch_deadline must be more than 0 seconds")
        if not 0 < self.remote_stats_interval <= DAY:
            raise InvalidSetting("remote_stats_interval", "must be more than 0 and at most a day")
        if self.accel_redirect and not ACCEL_PREFIX.fullmatch(self.accel_redirect):
            raise ValueError("setting 'accel_redirect' must be empty (off) or a path like '/_blobs/'")

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def trusted_keys_dir(self) -> Path:
        return self.data_dir / "trusted-keys"

    @property
    def url_signing_dir(self) -> Path:
        return self.data_dir / "url-signing"


def load_edge_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> EdgeSettings:
    return load_settings(
        EdgeSettings,
        config_file=config_file,
        env=os.environ if env is None else env,
        env_prefix="EDGE_",
        overrides=flags,
    )
