"""The edge's own tables, beside the artifact catalog in the same database.

They live in one database with the catalog on purpose: a bundle commit writes the
index entries and the edge's record of the bundle in one sqlite transaction.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

edge_migrations = Migrations("edge")


@edge_migrations()
def m001_transactions_bundles_keys(db: Database) -> None:
    db.executescript(
        """
        -- One row per distinct manifest: the id is the manifest's sha256, so two pushes
        -- of the same bundle meet in one transaction.
        CREATE TABLE transactions (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            state TEXT NOT NULL,              -- OPEN, COMMITTED, ABORTED, EXPIRED
            manifest BLOB NOT NULL,           -- the canonical, signed bytes
            signature TEXT NOT NULL,
            signer TEXT NOT NULL,             -- fingerprint of the key that signed it
            created INTEGER NOT NULL,
            expires INTEGER NOT NULL,
            committed INTEGER,
            files INTEGER NOT NULL,
            bytes INTEGER NOT NULL
        );
        CREATE INDEX transactions_by_state ON transactions (state, expires);
        -- The distinct blobs of each transaction's manifest.
        CREATE TABLE transaction_blobs (
            transaction_id TEXT NOT NULL REFERENCES transactions(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (transaction_id, sha256)
        ) WITHOUT ROWID;
        CREATE INDEX transaction_blobs_by_sha256 ON transaction_blobs (sha256);
        -- Bundles committed on this edge, and every path each of them claims: two bundles
        -- may publish the same bytes at one path, and deleting one must keep it for the other.
        CREATE TABLE received_bundles (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            committed INTEGER NOT NULL,
            files INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            PRIMARY KEY (name, version)
        ) WITHOUT ROWID;
        CREATE TABLE bundle_files (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (name, version, repo, path),
            FOREIGN KEY (name, version) REFERENCES received_bundles (name, version) ON DELETE CASCADE
        ) WITHOUT ROWID;
        CREATE INDEX bundle_files_by_path ON bundle_files (repo, path);
        -- Signing keys this edge trusts, by alias; the key material lives in a GnuPG home.
        CREATE TABLE trusted_keys (
            alias TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            created INTEGER NOT NULL
        );
        CREATE INDEX trusted_keys_by_fingerprint ON trusted_keys (fingerprint);
        """
    )
