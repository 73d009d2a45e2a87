"""The Distribution service's own tables, beside the artifact catalog in the same database."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

distribution_migrations = Migrations("distribution")


@distribution_migrations()
def m001_bundles(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE bundles (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            state TEXT NOT NULL,              -- OPEN, SIGNED
            description TEXT NOT NULL,
            release_notes TEXT NOT NULL,      -- JSON {"syntax","content"}
            request_sha256 TEXT NOT NULL,     -- what was asked for: a retry with the same body is the same bundle
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            modified INTEGER NOT NULL,
            artifacts_count INTEGER NOT NULL,
            artifacts_size INTEGER NOT NULL,
            manifest BLOB,                    -- canonical bytes, once signed
            manifest_sha256 TEXT,
            signature TEXT,
            signed_by TEXT,                   -- signing key fingerprint
            signed_at INTEGER,
            PRIMARY KEY (name, version)
        ) WITHOUT ROWID;
        CREATE INDEX bundles_by_created ON bundles (created, name, version);
        CREATE TABLE bundle_artifacts (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            sha1 TEXT NOT NULL,
            md5 TEXT NOT NULL,
            size INTEGER NOT NULL,
            properties TEXT NOT NULL,
            PRIMARY KEY (name, version, target),
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        ) WITHOUT ROWID;
        """
    )
