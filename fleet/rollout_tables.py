"""The rollout tables as SQLAlchemy Core declares them: what ``fleet/rollout_schema.py``'s
migrations add up to, created as such on PostgreSQL (``repository/pg_schema.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Text

rollout_tables = MetaData()

deployments = Table(
    "fleet_deployments",
    rollout_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("app", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("bundle", Text, nullable=False),
    Column("app_spec", Text, nullable=False),
    Column("targets", Text, nullable=False),
    Column("phases", Text, nullable=False),
    Column("success_threshold", Text, nullable=False),
    Column("halt_on_failures", Text, nullable=False),
    Column("maintenance_window", Text),
    Column("allow_downgrade", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("phase", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("done", BigInteger, nullable=False, server_default="0"),
    Column("message", Text, nullable=False, server_default=""),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated", BigInteger, nullable=False),
)
Index("fleet_deployments_by_done", deployments.c.done, deployments.c.id)

phases = Table(
    "fleet_phases",
    rollout_tables,
    Column("deployment_id", BigInteger, primary_key=True),
    Column("phase", BigInteger, primary_key=True),
    Column("size", BigInteger, nullable=False),
    *(
        Column(name, BigInteger, nullable=False, server_default="0")
        for name in ("succeeded", "failed", "rejected", "canceled")
    ),
)

targets = Table(
    "fleet_targets",
    rollout_tables,
    Column("deployment_id", BigInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("device_id", Text, nullable=False),
    Column("phase", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("by_device", BigInteger, nullable=False, server_default="0"),
    Column("step", Text),
    Column("message", Text, nullable=False, server_default=""),
    Column("version", Text),
    Column("previous", Text),
    Column("rolled_back", BigInteger, nullable=False, server_default="0"),
    Column("bytes_done", BigInteger, nullable=False, server_default="0"),
    Column("bytes_total", BigInteger, nullable=False, server_default="0"),
    Column("reports", BigInteger, nullable=False, server_default="0"),
    Column("updated", BigInteger, nullable=False),
    Column("rb_state", Text),
    Column("rb_step", Text),
    Column("rb_message", Text, nullable=False, server_default=""),
    Column("rb_updated", BigInteger),
)
Index("fleet_targets_by_device", targets.c.device_id, targets.c.deployment_id, unique=True)
Index("fleet_targets_by_state", targets.c.deployment_id, targets.c.state)
Index("fleet_targets_by_rb_state", targets.c.deployment_id, targets.c.rb_state)

feedback = Table(
    "fleet_feedback",
    rollout_tables,
    Column("deployment_id", BigInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("n", BigInteger, primary_key=True),
    Column("received", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
)
