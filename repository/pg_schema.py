"""The schema on PostgreSQL: the tables as SQLAlchemy Core declares them, made once, under a lock.

On sqlite the schema is the history of its migrations (``repository/schema.py`` and its peers),
applied in order and never edited once shipped. PostgreSQL support came later, so its lineage
starts at that history's end: each migration set registers the ``MetaData`` its migrations
add up to (``tables_of``), the first replica to open an empty database creates it with
``create_all`` and records every migration of the set as applied. A test holds the two in step
(the tables a fresh sqlite file has after its migrations equal the ``MetaData``). A migration
written after this point must say how it runs on PostgreSQL; until one does, a replica refuses
to start on a database that lacks it, rather than running on a schema it does not know.

Replicas start at once: the first takes a transaction-scoped advisory lock and does the work,
the others wait on the lock and then find everything recorded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlite_utils import Migrations

from .sql import Sql

# pg_advisory_xact_lock's key for "the schema is being changed" (any fixed 64-bit number).
SCHEMA_LOCK = 0x5E4E_0001
COLLATIONS = ("C", "POSIX")

_tables: dict[str, sa.MetaData] = {}


class SchemaError(RuntimeError):
    """The PostgreSQL database cannot be used as it is; the message says what to do."""


def tables_of(migrations: Migrations, metadata: sa.MetaData) -> None:
    """Declare ``metadata`` as what ``migrations`` add up to (its PostgreSQL baseline)."""
    _tables[migrations.name] = metadata


def migration_names(migrations: Migrations) -> list[str]:
    """The names of a set's migrations, in order (sqlite_utils keeps them in ``_migrations``)."""
    return [m.name for m in migrations._migrations]


def apply_schemas(sql: Sql, migration_sets: Sequence[Migrations]) -> None:
    with sql.atomic():
        sql.execute("SELECT pg_advisory_xact_lock(:key)", {"key": SCHEMA_LOCK})
        _check_collation(sql)
        sql.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (migration_set TEXT NOT NULL, name TEXT NOT NULL,"
            " applied BIGINT NOT NULL, PRIMARY KEY (migration_set, name))"
        )
        for migrations in migration_sets:
            _apply(sql, migrations)


def _apply(sql: Sql, migrations: Migrations) -> None:
    metadata = _tables.get(migrations.name)
    if metadata is None:
        raise SchemaError(f"the '{migrations.name}' tables have no PostgreSQL form; use sqlite for this service")
    names = migration_names(migrations)
    applied = {
        row[0]
        for row in sql.execute(
            "SELECT name FROM schema_migrations WHERE migration_set = :set", {"set": migrations.name}
        ).fetchall()
    }
    if not applied:
        metadata.create_all(sql.connection)
        now = int(time.time() * 1000)
        sql.executemany(
            "INSERT INTO schema_migrations (migration_set, name, applied) VALUES (:set, :name, :applied)",
            [{"set": migrations.name, "name": name, "applied": now} for name in names],
        )
        return
    if missing := [name for name in names if name not in applied]:
        raise SchemaError(
            f"the database lacks migrations {', '.join(missing)} of '{migrations.name}',"
            " which have no PostgreSQL form yet"
        )
    if unknown := sorted(applied - set(names)):
        raise SchemaError(
            f"the database has migrations {', '.join(unknown)} of '{migrations.name}' that this"
            " version does not know: it was opened by a newer version"
        )


def _check_collation(sql: Sql) -> None:
    """Keys are compared by code point on both engines (ranges such as ``path >= 'a/' AND
    path < 'a0'`` depend on it): a database of another collation is refused at start."""
    collation = sql.scalar("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    if collation not in COLLATIONS:
        raise SchemaError(
            f"the database's collation is {collation!r}; it must be 'C': create it with"
            " CREATE DATABASE <name> TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
