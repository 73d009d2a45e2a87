"""The console's table as SQLAlchemy Core declares it for PostgreSQL (``repository/pg_schema.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Text

console_tables = MetaData()

console_sessions = Table(
    "console_sessions",
    console_tables,
    Column("id_sha256", Text, primary_key=True),
    Column("subject", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("groups", Text, nullable=False),
    Column("token_id", Text),
    Column("csrf", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
)
Index("console_sessions_by_expiry", console_sessions.c.expires)
