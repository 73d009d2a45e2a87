"""The catalog's schema, as migrations applied at start-up in order, never edited once shipped."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from .pg_schema import tables_of
from .tables import catalog_tables

catalog_migrations = Migrations("catalog")


@catalog_migrations()
def m001_repos_artifacts_folders(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE repos (
            key TEXT PRIMARY KEY,
            type TEXT NOT NULL DEFAULT 'LOCAL',
            package_type TEXT NOT NULL DEFAULT 'generic',
            description TEXT NOT NULL DEFAULT '',
            anonymous_read INTEGER NOT NULL DEFAULT 1,
            created INTEGER NOT NULL
        );
        -- A folder row for every folder that holds something, so that listing the
        -- children of a folder is an index range, not a scan of its subtree.
        CREATE TABLE folders (
            repo TEXT NOT NULL REFERENCES repos(key),
            path TEXT NOT NULL,
            parent TEXT NOT NULL,
            name TEXT NOT NULL,
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (repo, path)
        ) WITHOUT ROWID;
        CREATE INDEX folders_by_parent ON folders (repo, parent, name);
        CREATE TABLE artifacts (
            repo TEXT NOT NULL REFERENCES repos(key),
            path TEXT NOT NULL,
            folder TEXT NOT NULL,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            sha1 TEXT NOT NULL,
            md5 TEXT NOT NULL,
            size INTEGER NOT NULL,
            mime_type TEXT NOT NULL,
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            modified INTEGER NOT NULL,
            modified_by TEXT NOT NULL,
            owner TEXT NOT NULL,
            properties TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (repo, path)
        ) WITHOUT ROWID;
        CREATE INDEX artifacts_by_folder ON artifacts (repo, folder, name);
        CREATE INDEX artifacts_by_sha256 ON artifacts (sha256);
        CREATE INDEX artifacts_by_sha1 ON artifacts (sha1);
        """
    )


@catalog_migrations()
def m002_tokens(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            subject TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            created INTEGER NOT NULL,
            expires INTEGER,
            revoked INTEGER
        );
        """
    )


@catalog_migrations()
def m003_quarantine_leases_scrub(db: Database) -> None:
    db.executescript(
        """
        -- Blobs whose stored bytes did not match their sha256 (or that the store had lost),
        -- taken out of service until the right bytes are written again.
        CREATE TABLE quarantine (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,             -- the size the catalog records
            found INTEGER NOT NULL,            -- epoch ms
            reason TEXT NOT NULL,
            location TEXT                      -- where the damaged bytes were moved; NULL: there were none
        ) WITHOUT ROWID;
        -- Background work that must run once per node, whatever the number of processes:
        -- the holder of a lease renews it while it works; an expired lease may be taken over.
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires INTEGER NOT NULL           -- epoch ms
        ) WITHOUT ROWID;
        -- The scrub's progress: the pass under way (from where it resumes after a restart)
        -- and the last one completed.
        CREATE TABLE scrub_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            cursor TEXT NOT NULL DEFAULT '',   -- the last sha256 checked by the pass under way
            started INTEGER,                   -- NULL: no pass under way
            blobs INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            quarantined INTEGER NOT NULL DEFAULT 0,
            last_started INTEGER,
            last_finished INTEGER,
            last_blobs INTEGER NOT NULL DEFAULT 0,
            last_bytes INTEGER NOT NULL DEFAULT 0,
            last_quarantined INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO scrub_state (id) VALUES (1);
        """
    )


@catalog_migrations()
def m004_bulk_changes(db: Database) -> None:
    db.executescript(
        """
        -- Bulk changes in progress: a bundle's entries published, or removed, a page at a time
        -- in short transactions. While a change's row is here, readers see none of what it is
        -- publishing (entries, folders and repos it made carry its key in ``pending``) and,
        -- for a removal, no entry of its owner; so a bundle appears or disappears whole, when
        -- this one row goes or comes.
        CREATE TABLE bulk_changes (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('publish', 'unpublish')),
            started INTEGER NOT NULL
        );
        CREATE INDEX bulk_changes_by_owner ON bulk_changes (owner);
        ALTER TABLE artifacts ADD COLUMN pending TEXT;
        ALTER TABLE folders ADD COLUMN pending TEXT;
        ALTER TABLE repos ADD COLUMN pending TEXT;
        CREATE INDEX folders_by_pending ON folders (pending) WHERE pending IS NOT NULL;
        """
    )


@catalog_migrations()
def m005_properties(db: Database) -> None:
    db.executescript(
        """
        -- Every (key, value) of every file, so a search by property is an index lookup. The
        -- artifacts' ``properties`` JSON stays the one source of truth: these rows are derived
        -- from it by triggers in the same transaction as every write, like an index, and are
        -- never written by the service itself.
        CREATE TABLE properties (
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (repo, path, key, value)
        ) WITHOUT ROWID;
        CREATE INDEX properties_by_key_value ON properties (key, value);
        INSERT OR IGNORE INTO properties (repo, path, key, value)
            SELECT a.repo, a.path, p.key, v.value FROM artifacts a, json_each(a.properties) p, json_each(p.value) v;
        CREATE TRIGGER properties_of_new_artifact AFTER INSERT ON artifacts BEGIN
            INSERT OR IGNORE INTO properties (repo, path, key, value)
                SELECT new.repo, new.path, p.key, v.value FROM json_each(new.properties) p, json_each(p.value) v;
        END;
        CREATE TRIGGER properties_of_changed_artifact AFTER UPDATE OF properties ON artifacts BEGIN
            DELETE FROM properties WHERE repo = old.repo AND path = old.path;
            INSERT OR IGNORE INTO properties (repo, path, key, value)
                SELECT new.repo, new.path, p.key, v.value FROM json_each(new.properties) p, json_each(p.value) v;
        END;
        CREATE TRIGGER properties_of_removed_artifact AFTER DELETE ON artifacts BEGIN
            DELETE FROM properties WHERE repo = old.repo AND path = old.path;
        END;
        """
    )


# On PostgreSQL the schema is the tables these migrations add up to (repository/pg_schema.py).
tables_of(catalog_migrations, catalog_tables)
