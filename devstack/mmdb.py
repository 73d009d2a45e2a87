"""Small, real MaxMind-format (.mmdb) country databases, written with mmdb-writer.

The records have GeoLite2-Country's shape (``country`` / ``registered_country`` with
an ``iso_code``), so the edge reads them exactly as it reads MaxMind's own files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# Documentation and test ranges (RFC 5737, RFC 3849) with made-up countries.
COUNTRIES: dict[str, dict[str, Any]] = {
    "198.51.100.0/24": {"country": {"iso_code": "US"}},  # a partner in an allowed country
    "192.0.2.0/24": {"country": {"iso_code": "CN"}},  # a country the rules do not allow
    "203.0.113.0/24": {"country": {"iso_code": "DE"}},  # allowed country, denied network
    "100.64.0.0/24": {"registered_country": {"iso_code": "CA"}},  # no `country`: falls back
    "100.64.1.0/24": {"continent": {"code": "EU"}},  # neither: country unknown
    "2001:db8:1::/48": {"country": {"iso_code": "DE"}},
    "2001:db8:2::/48": {"country": {"iso_code": "CN"}},
}


class _Writer(MMDBWriter):
    """mmdb-writer stamps the time of writing as the build time; ``built`` backdates it."""

    def __init__(self, *, built: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = built

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        if self.built is not None:
            meta["build_epoch"] = self.built
        return meta


def write_mmdb(
    path: Path,
    networks: Mapping[str, Mapping[str, Any]] = COUNTRIES,
    *,
    ip_version: int = 6,
    built: int | None = None,
) -> Path:
    """Write a database mapping each CIDR to its record, replacing ``path`` atomically (as
    geoipupdate does). An IPv6 database also answers IPv4 addresses (``::a.b.c.d``).
    ``built``: the build time it carries (epoch seconds), now by default."""
    writer = _Writer(
        built=built,
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type="GeoLite2-Country",
        languages=["en"],
        description="edge test countries",
    )
    for cidr, record in networks.items():
        if ip_version == 4 and ":" in cidr:
            continue
        writer.insert_network(IPSet([cidr]), dict(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)
    return path
