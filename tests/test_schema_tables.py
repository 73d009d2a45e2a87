"""The tables SQLAlchemy Core declares for PostgreSQL (``*/tables.py``) are the tables a fresh
sqlite file has after its migrations: the two lineages of one schema stay in step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from distribution.schema import distribution_migrations
from distribution.tables import distribution_tables
from edge.schema import edge_migrations
from edge.tables import edge_tables
from fleet.device_schema import device_migrations
from fleet.device_tables import device_tables
from fleet.rollout_schema import rollout_migrations, rollout_tables
from fleet.runtime_schema import runtime_migrations
from fleet.runtime_tables import runtime_tables
from repository.console.schema import console_migrations
from repository.console.tables import console_tables
from repository.db import Database
from repository.schema import catalog_migrations
from repository.tables import catalog_tables

SCHEMAS = {
    "catalog": (catalog_migrations, catalog_tables),
    "edge": (edge_migrations, edge_tables),
    "distribution": (distribution_migrations, distribution_tables),
    "fleet-devices": (device_migrations, device_tables),
    "fleet-rollouts": (rollout_migrations, rollout_tables),
    "fleet-runtime": (runtime_migrations, runtime_tables),
    "console": (console_migrations, console_tables),
}
BOOKKEEPING = {"_sqlite_migrations", "sqlite_sequence"}


def _kind(type_: sa.types.TypeEngine[Any]) -> type:
    return type_.python_type


def _default(value: Any) -> str | None:
    if value is None:
        return None
    text = value.arg if isinstance(value, sa.schema.DefaultClause) else value
    return str(getattr(text, "text", text)).strip("'")


def _described(inspector: sa.Inspector, table: str) -> dict[str, Any]:
    return {
        "columns": {
            c["name"]: (_kind(c["type"]), c["nullable"] and not c.get("primary_key"), _default(c["default"]))
            for c in inspector.get_columns(table)
        },
        "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
        "indexes": sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(table)
            if not i["name"].startswith("sqlite_autoindex")
        ),
        "foreign keys": _foreign_keys(inspector, table),
    }


def _foreign_keys(inspector: sa.Inspector, table: str) -> list[tuple[str, tuple[str, ...], str | None]]:
    """From sqlite's own ``foreign_key_list``: SQLAlchemy's reflection drops the ON DELETE of a
    key declared on its column (``REFERENCES t(id) ON DELETE CASCADE``)."""
    with inspector.bind.connect() as conn:
        rows = conn.exec_driver_sql(f"PRAGMA foreign_key_list('{table}')").fetchall()
    keys: dict[int, tuple[str, list[str], str | None]] = {}
    for id_, _seq, referred, column, _to, _on_update, on_delete, _match in rows:
        keys.setdefault(id_, (referred, [], None if on_delete == "NO ACTION" else on_delete))[1].append(column)
    return sorted((referred, tuple(columns), on_delete) for referred, columns, on_delete in keys.values())


def _declared(table: sa.Table) -> dict[str, Any]:
    pk = set(table.primary_key.columns.keys())
    return {
        "columns": {
            c.name: (_kind(c.type), c.nullable and c.name not in pk, _default(c.server_default)) for c in table.columns
        },
        "primary key": list(table.primary_key.columns.keys()),
        "indexes": sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes),
        "foreign keys": sorted(
            (f.referred_table.name, tuple(f.column_keys), f.ondelete) for f in table.foreign_key_constraints
        ),
    }


@pytest.mark.parametrize("schema", list(SCHEMAS))
async def test_the_declared_tables_are_what_the_sqlite_migrations_make(tmp_path: Path, schema: str) -> None:
    migrations, metadata = SCHEMAS[schema]
    db = Database(tmp_path / "fresh.db")
    await db.open(migrations)
    try:
        inspector = sa.inspect(db.engine)
        made = set(inspector.get_table_names()) - BOOKKEEPING
        assert made == set(metadata.tables)
        for name, table in metadata.tables.items():
            assert _described(inspector, name) == _declared(table), name
    finally:
        await db.close()
