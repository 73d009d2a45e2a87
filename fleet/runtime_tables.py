"""The runtime tables as SQLAlchemy Core declares them: what ``fleet/runtime_schema.py``'s
migrations add up to, created as such on PostgreSQL (``repository/pg_schema.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Text

runtime_tables = MetaData()

state = Table(
    "fleet_runtime_state",
    runtime_tables,
    Column("device_id", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
)

processes = Table(
    "fleet_runtime_processes",
    runtime_tables,
    Column("device_id", Text, primary_key=True),
    Column("pid", BigInteger, primary_key=True),
    Column("started", BigInteger, primary_key=True),
    Column("exe", Text, nullable=False),
    Column("sha256", Text),
    Column("username", Text, nullable=False),
    Column("script", Text),
    Column("script_sha256", Text),
    Column("ident", Text),
    Column("container", Text),
    Column("cmdline", Text),
    Column("seen", BigInteger, nullable=False),
)
Index("fleet_runtime_processes_by_ident", processes.c.ident, processes.c.device_id)

changes = Table(
    "fleet_runtime_changes",
    runtime_tables,
    Column("device_id", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("time", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
)

drift = Table(
    "fleet_runtime_drift",
    runtime_tables,
    Column("device_id", Text, primary_key=True),
    Column("app", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("version", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("found", BigInteger, nullable=False),
)

events = Table(
    "fleet_runtime_events",
    runtime_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("time", BigInteger, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sha256", Text),
    Column("path", Text, nullable=False),
    Column("detail", Text, nullable=False),
)

groups = Table(
    "fleet_runtime_groups",
    runtime_tables,
    Column("grp", Text, primary_key=True),
    Column("settings", Text, nullable=False),
)
