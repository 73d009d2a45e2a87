"""The device tables as SQLAlchemy Core declares them: what ``fleet/device_schema.py``'s
migrations add up to, created as such on PostgreSQL (``repository/pg_schema.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Text

device_tables = MetaData()

enrollment_tokens = Table(
    "fleet_enrollment_tokens",
    device_tables,
    Column("id", Text, primary_key=True),
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("grp", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("revoked", BigInteger),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("used", BigInteger, nullable=False, server_default="0"),
)

devices = Table(
    "fleet_devices",
    device_tables,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("grp", Text, nullable=False),
    Column("credential_sha256", Text, nullable=False, unique=True),
    Column("token_id", Text, nullable=False),
    Column("enrolled", BigInteger, nullable=False),
    Column("revoked", BigInteger),
    Column("poll_interval", BigInteger, nullable=False),
    Column("last_seen", BigInteger),
    Column("agent_version", Text, nullable=False, server_default=""),
    Column("heartbeat", Text),
    Column("apps", Text),
)
Index("fleet_devices_by_group", devices.c.grp, devices.c.name)
Index("fleet_devices_by_last_seen", devices.c.last_seen)

device_tags = Table(
    "fleet_device_tags",
    device_tables,
    Column("device_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
Index("fleet_device_tags_by_value", device_tags.c.key, device_tags.c.value, device_tags.c.device_id)

device_apps = Table(
    "fleet_device_apps",
    device_tables,
    Column("device_id", Text, primary_key=True),
    Column("app", Text, primary_key=True),
    Column("version", Text),
    Column("previous", Text),
)
Index("fleet_device_apps_by_version", device_apps.c.app, device_apps.c.version, device_apps.c.device_id)

heartbeats = Table(
    "fleet_heartbeats",
    device_tables,
    Column("device_id", Text, primary_key=True),
    Column("time", BigInteger, primary_key=True),
    Column("body", Text, nullable=False),
)

apps = Table(
    "fleet_apps",
    device_tables,
    Column("name", Text, primary_key=True),
    Column("bundle", Text, nullable=False),
    Column("install_dir", Text, nullable=False),
    Column("pre_install", Text),
    Column("restart", Text),
    Column("health_command", Text),
    Column("health_url", Text),
    Column("health_timeout", BigInteger, nullable=False),
    Column("keep", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("modified", BigInteger, nullable=False),
)

groups = Table(
    "fleet_groups",
    device_tables,
    Column("grp", Text, primary_key=True),
    Column("poll_interval", BigInteger, nullable=False),
)
