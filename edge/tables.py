"""The edge's tables as SQLAlchemy Core declares them: the schema ``edge/schema.py``'s migrations
add up to, created as it is on PostgreSQL (``repository/pg_schema.py``). Integers are BIGINT, as
in ``repository/tables.py``."""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    event,
)

edge_tables = MetaData()

transactions = Table(
    "transactions",
    edge_tables,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("signer", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("committed", BigInteger),
    Column("files", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)
Index("transactions_by_state", transactions.c.state, transactions.c.expires)
transaction_blobs = Table(
    "transaction_blobs",
    edge_tables,
    Column("transaction_id", Text, ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True),
    Column("sha256", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("stored", BigInteger, nullable=False, server_default="0"),
)
Index("transaction_blobs_by_sha256", transaction_blobs.c.sha256)
Table(
    "transaction_sboms",
    edge_tables,
    Column("transaction_id", Text, ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True),
    Column("sha256", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
)
Table(
    "transaction_manifest_chunks",
    edge_tables,
    Column("transaction_id", Text, ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)
Table(
    "transaction_files",
    edge_tables,
    Column("transaction_id", Text, primary_key=True),
    Column("repo", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("sha256", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha1", Text, nullable=False),
    Column("md5", Text, nullable=False),
    Column("properties", Text, nullable=False),
)
Table(
    "received_bundles",
    edge_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("manifest_sha256", Text, nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)
bundle_files = Table(
    "bundle_files",
    edge_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("repo", Text, primary_key=True),
    Column("path", Text, primary_key=True),
)
Index("bundle_files_by_path", bundle_files.c.repo, bundle_files.c.path)
Table(
    "bundle_changes",
    edge_tables,
    Column("name", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("transaction_id", Text, nullable=False),
    Column("action", Text, CheckConstraint("action IN ('commit', 'remove')"), nullable=False),
    Column("bulk_key", Text, nullable=False),
)
trusted_keys = Table(
    "trusted_keys",
    edge_tables,
    Column("alias", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)
Index("trusted_keys_by_fingerprint", trusted_keys.c.fingerprint)
Table(
    "users",
    edge_tables,
    Column("name", Text, primary_key=True),
    Column("email", Text, nullable=False, server_default=""),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("groups", Text, nullable=False, server_default="[]"),
    Column("created", BigInteger, nullable=False),
    Column("modified", BigInteger, nullable=False),
)
Table(
    "permission_targets",
    edge_tables,
    Column("name", Text, primary_key=True),
    Column("body", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("modified", BigInteger, nullable=False),
)
audit = Table(
    "audit",
    edge_tables,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("time", BigInteger, nullable=False),
    Column("subject", Text, nullable=False),
    Column("token_id", Text),
    Column("signed_kid", Text),
    Column("signed_iat", BigInteger),
    Column("client_ip", Text),
    Column("country", Text),
    Column("method", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("repo", Text),
    Column("path", Text),
    Column("status", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("denied_by", Text),
    Column("aborted", BigInteger, nullable=False, server_default="0"),
    Column("duration_ms", BigInteger, nullable=False, server_default="0"),
    Column("client_ip_packed", LargeBinary),
    Column("served_from", Text),
    sqlite_autoincrement=True,
)
Index("audit_by_time", audit.c.time)
Index("audit_by_repo", audit.c.repo, audit.c.path)
Index("audit_by_subject", audit.c.subject)
Index("audit_by_ip", audit.c.client_ip_packed)
# The audit trail's two rules, as sqlite's triggers have them (edge/schema.py): records are never
# changed, and none younger than a day is removed. Raised as integrity violations, which is what
# sqlite's RAISE(ABORT) is, so both engines answer a breach with the same error.
for _rule in (
    """
    CREATE FUNCTION audit_rules() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF OLD.time > (floor(extract(epoch FROM now()))::bigint - 86400) * 1000 THEN
            RAISE EXCEPTION 'audit records younger than a day are kept'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END $$
    """,
    "CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_rules()",
    "CREATE TRIGGER audit_keep_recent BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_rules()",
):
    event.listen(audit, "after_create", DDL(_rule).execute_if(dialect="postgresql"))
Table(
    "download_stats",
    edge_tables,
    Column("repo", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_downloaded", BigInteger, nullable=False),
    Column("last_downloaded_by", Text, nullable=False),
)
Table(
    "access_rules",
    edge_tables,
    Column("id", BigInteger, CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    Column("rules", Text, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("updated_by", Text, nullable=False),
)
Table(
    "url_signing_keys",
    edge_tables,
    Column("kid", Text, primary_key=True),
    Column("algorithm", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("own", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
)
Table(
    "staged_chunks",
    edge_tables,
    Column("transaction_id", Text, primary_key=True),
    Column("sha256", Text, primary_key=True),
    Column("first_byte", BigInteger, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("etag", Text, nullable=False),
)
Table(
    "trusted_key_material",
    edge_tables,
    Column("fingerprint", Text, primary_key=True),
    Column("public_key", Text, nullable=False),
    Column("updated", BigInteger, nullable=False),
)
Table(
    "virtual_repos",
    edge_tables,
    Column("key", Text, primary_key=True),
    Column("members", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("anonymous_read", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("modified", BigInteger, nullable=False),
)
Table(
    "pull_jobs",
    edge_tables,
    Column("distribution_id", BigInteger, primary_key=True, autoincrement=False),
    Column("type", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("transaction_id", Text),
)
relays = Table(
    "relays",
    edge_tables,
    Column("transaction_id", Text, primary_key=True),
    Column("child", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("total_files", BigInteger, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("distributed_files", BigInteger, nullable=False, server_default="0"),
    Column("distributed_bytes", BigInteger, nullable=False, server_default="0"),
    Column("sent_bytes", BigInteger, nullable=False, server_default="0"),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
)
Index("relays_by_state", relays.c.state)
Table(
    "remote_repos",
    edge_tables,
    Column("key", Text, primary_key=True),
    Column("config", Text, nullable=False),
    Column("updated", BigInteger, nullable=False),
)
remote_cache = Table(
    "remote_cache",
    edge_tables,
    Column("repo", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("last_used", BigInteger, nullable=False),
    Column("checked", BigInteger, nullable=False),
)
Index("remote_cache_by_use", remote_cache.c.last_used)
