"""The console's table: login sessions, kept in the service's database so that every worker and
every replica on the same database knows a session another one opened."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .tables import console_tables

console_migrations = Migrations("console")


@console_migrations()
def m013_console_sessions(db: Database) -> None:
    """Only a SHA-256 of the session id is stored: a copy of the database logs nobody in."""
    db.executescript(
        """
        CREATE TABLE console_sessions (
            id_sha256 TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            role TEXT NOT NULL,
            groups TEXT NOT NULL,             -- JSON list
            token_id TEXT,
            csrf TEXT NOT NULL,               -- the per-session token every form carries
            created INTEGER NOT NULL,
            expires INTEGER NOT NULL
        );
        CREATE INDEX console_sessions_by_expiry ON console_sessions (expires);
        """
    )


tables_of(console_migrations, console_tables)
