"""The Distribution service's tables as SQLAlchemy Core declares them: the schema
``distribution/schema.py``'s migrations add up to, created as it is on PostgreSQL
(``repository/pg_schema.py``). Integers are BIGINT, as in ``repository/tables.py``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, ForeignKeyConstraint, Index, LargeBinary, MetaData, Table, Text

distribution_tables = MetaData()

bundles = Table(
    "bundles",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("release_notes", Text, nullable=False),
    Column("request_sha256", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("modified", BigInteger, nullable=False),
    Column("artifacts_count", BigInteger, nullable=False),
    Column("artifacts_size", BigInteger, nullable=False),
    Column("manifest_sha256", Text),
    Column("signed_by", Text),
    Column("signed_at", BigInteger),
)
Index("bundles_by_created", bundles.c.created, bundles.c.name, bundles.c.version)


def _of_bundle() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["name", "version"], ["bundles.name", "bundles.version"], ondelete="CASCADE")


bundle_artifacts = Table(
    "bundle_artifacts",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("target", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("sha1", Text, nullable=False),
    Column("md5", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("properties", Text, nullable=False),
    _of_bundle(),
)
Index("bundle_artifacts_by_sha256", bundle_artifacts.c.sha256)
bundle_sboms = Table(
    "bundle_sboms",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("sha256", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    _of_bundle(),
)
Index("bundle_sboms_by_sha256", bundle_sboms.c.sha256)
Table(
    "bundle_manifests",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("signature", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    _of_bundle(),
)
Table(
    "bundle_manifest_chunks",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
    ForeignKeyConstraint(
        ["name", "version"], ["bundle_manifests.name", "bundle_manifests.version"], ondelete="CASCADE"
    ),
)
bundle_staging = Table(
    "bundle_staging",
    distribution_tables,
    Column("token", Text, primary_key=True),
    Column("target", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("sha1", Text, nullable=False),
    Column("md5", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("properties", Text, nullable=False),
    Column("staged_at", BigInteger, nullable=False),
)
Index("bundle_staging_by_sha256", bundle_staging.c.token, bundle_staging.c.sha256)
Table(
    "edges",
    distribution_tables,
    Column("name", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("site_name", Text, nullable=False),
    Column("city_name", Text, nullable=False),
    Column("country_code", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("service_id", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("last_seen", BigInteger),
    Column("healthy", BigInteger),
    Column("last_error", Text),
    Column("parent", Text),
    # m010_pull_mode_edges
    Column("mode", Text, nullable=False, server_default="push"),
    Column("credential_sha256", Text),
)
distributions = Table(
    "distributions",
    distribution_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("friendly_id", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("rules", Text, nullable=False),
    Column("on_success", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("finished", BigInteger),
    _of_bundle(),
    sqlite_autoincrement=True,
)
Index("distributions_by_bundle", distributions.c.name, distributions.c.version, distributions.c.id)
distribution_jobs = Table(
    "distribution_jobs",
    distribution_tables,
    Column("distribution_id", BigInteger, ForeignKey("distributions.id", ondelete="CASCADE"), primary_key=True),
    Column("edge", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("general_error", Text, nullable=False, server_default=""),
    Column("transaction_id", Text),
    Column("total_files", BigInteger, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("distributed_files", BigInteger, nullable=False, server_default="0"),
    Column("distributed_bytes", BigInteger, nullable=False, server_default="0"),
    Column("sent_files", BigInteger, nullable=False, server_default="0"),
    Column("sent_bytes", BigInteger, nullable=False, server_default="0"),
    Column("attempts", BigInteger, nullable=False, server_default="0"),
    Column("next_attempt", BigInteger, nullable=False, server_default="0"),
    Column("started", BigInteger),
    Column("finished", BigInteger),
    Column("lease_holder", Text),
    Column("lease_expires", BigInteger, nullable=False, server_default="0"),
)
Index("jobs_by_state", distribution_jobs.c.state, distribution_jobs.c.next_attempt)
Index("jobs_by_edge", distribution_jobs.c.edge, distribution_jobs.c.lease_expires)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    distribution_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("enabled", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("disabled_reason", Text, nullable=False, server_default=""),
    Column("lease_holder", Text),
    Column("lease_expires", BigInteger, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)
Table(
    "webhook_events",
    distribution_tables,
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
)
webhook_deliveries = Table(
    "webhook_deliveries",
    distribution_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("subscription_id", BigInteger, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", Text, ForeignKey("webhook_events.id"), nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", BigInteger, nullable=False, server_default="0"),
    Column("next_attempt", BigInteger, nullable=False, server_default="0"),
    Column("last_status", BigInteger),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("finished", BigInteger),
    sqlite_autoincrement=True,
)
Index("webhook_deliveries_in_order", webhook_deliveries.c.subscription_id, webhook_deliveries.c.seq, unique=True)
Index(
    "webhook_deliveries_by_state",
    webhook_deliveries.c.subscription_id,
    webhook_deliveries.c.state,
    webhook_deliveries.c.seq,
)
Index("webhook_deliveries_by_event", webhook_deliveries.c.event_id)
