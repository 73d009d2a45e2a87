"""The catalog's tables as SQLAlchemy Core declares them: the schema ``repository/schema.py``'s
migrations add up to, created as it is on PostgreSQL (``repository/pg_schema.py``).

Integers are BIGINT (epoch milliseconds and sizes outgrow 32 bits); sqlite stores every
integer in 64 bits whatever its declared type, so the two engines hold the same values.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, MetaData, Table, Text

catalog_tables = MetaData()

Table(
    "repos",
    catalog_tables,
    Column("key", Text, primary_key=True),
    Column("type", Text, nullable=False, server_default="LOCAL"),
    Column("package_type", Text, nullable=False, server_default="generic"),
    Column("description", Text, nullable=False, server_default=""),
    Column("anonymous_read", BigInteger, nullable=False, server_default="1"),
    Column("created", BigInteger, nullable=False),
    Column("pending", Text),
)
folders = Table(
    "folders",
    catalog_tables,
    Column("repo", Text, ForeignKey("repos.key"), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("parent", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("pending", Text),
)
Index("folders_by_parent", folders.c.repo, folders.c.parent, folders.c.name)
Index("folders_by_pending", folders.c.pending, postgresql_where=folders.c.pending.isnot(None))
artifacts = Table(
    "artifacts",
    catalog_tables,
    Column("repo", Text, ForeignKey("repos.key"), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("folder", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("sha1", Text, nullable=False),
    Column("md5", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime_type", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("modified", BigInteger, nullable=False),
    Column("modified_by", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("properties", Text, nullable=False, server_default="{}"),
    Column("pending", Text),
)
Index("artifacts_by_folder", artifacts.c.repo, artifacts.c.folder, artifacts.c.name)
Index("artifacts_by_sha256", artifacts.c.sha256)
Index("artifacts_by_sha1", artifacts.c.sha1)
Table(
    "tokens",
    catalog_tables,
    Column("id", Text, primary_key=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger),
    Column("revoked", BigInteger),
)
Table(
    "quarantine",
    catalog_tables,
    Column("sha256", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("found", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("location", Text),
)
Table(
    "leases",
    catalog_tables,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires", BigInteger, nullable=False),
)
scrub_state = Table(
    "scrub_state",
    catalog_tables,
    Column("id", BigInteger, CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    Column("cursor", Text, nullable=False, server_default=""),
    Column("started", BigInteger),
    Column("blobs", BigInteger, nullable=False, server_default="0"),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("quarantined", BigInteger, nullable=False, server_default="0"),
    Column("last_started", BigInteger),
    Column("last_finished", BigInteger),
    Column("last_blobs", BigInteger, nullable=False, server_default="0"),
    Column("last_bytes", BigInteger, nullable=False, server_default="0"),
    Column("last_quarantined", BigInteger, nullable=False, server_default="0"),
)
sa.event.listen(scrub_state, "after_create", sa.DDL("INSERT INTO scrub_state (id) VALUES (1)"))
bulk_changes = Table(
    "bulk_changes",
    catalog_tables,
    Column("key", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("action", Text, CheckConstraint("action IN ('publish', 'unpublish')"), nullable=False),
    Column("started", BigInteger, nullable=False),
)
Index("bulk_changes_by_owner", bulk_changes.c.owner)
properties = Table(
    "properties",
    catalog_tables,
    Column("repo", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, primary_key=True),
)
Index("properties_by_key_value", properties.c.key, properties.c.value)
# Derived from ``artifacts.properties`` by the database in every write's transaction, as the
# sqlite triggers of migration m005_properties do.
sa.event.listen(
    catalog_tables,  # after every table: the trigger is on artifacts
    "after_create",
    sa.DDL(
        """
        CREATE FUNCTION index_artifact_properties() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                DELETE FROM properties WHERE repo = OLD.repo AND path = OLD.path;
            END IF;
            IF TG_OP <> 'DELETE' THEN
                INSERT INTO properties (repo, path, key, value)
                    SELECT NEW.repo, NEW.path, p.key, v.value
                    FROM jsonb_each(NEW.properties::jsonb) p, jsonb_array_elements_text(p.value) v
                    ON CONFLICT DO NOTHING;
            END IF;
            RETURN NULL;
        END
        $body$;
        CREATE TRIGGER artifacts_properties AFTER INSERT OR DELETE OR UPDATE OF properties ON artifacts
            FOR EACH ROW EXECUTE FUNCTION index_artifact_properties();
        """
    ).execute_if(dialect="postgresql"),
)
