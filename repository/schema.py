"""The catalog's schema, as migrations applied at start-up in order, never edited once shipped."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

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
def m003_bulk_changes(db: Database) -> None:
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
