"""The edge's own tables, beside the artifact catalog in the same database.

They live in one database with the catalog on purpose: a bundle commit writes the
index entries and the edge's record of the bundle in one database transaction.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .access.audit_store import packed_address
from .tables import edge_tables

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


@edge_migrations()
def m002_users_permissions_audit(db: Database) -> None:
    db.executescript(
        """
        -- Users log in with basic auth; the password is kept only as an scrypt hash.
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            email TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            groups TEXT NOT NULL DEFAULT '[]',   -- JSON list of group names
            created INTEGER NOT NULL,
            modified INTEGER NOT NULL
        );
        -- Permission targets, each as its validated JSON (Artifactory's v2 shape).
        CREATE TABLE permission_targets (
            name TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            created INTEGER NOT NULL,
            modified INTEGER NOT NULL
        );
        -- The audit trail: one row per decision or download, never updated. AUTOINCREMENT
        -- so that ids (the paging cursor) are never reused after old rows are pruned.
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time INTEGER NOT NULL,               -- epoch ms when the response was finished
            subject TEXT NOT NULL,
            token_id TEXT,
            signed_kid TEXT,
            signed_iat INTEGER,
            client_ip TEXT,
            country TEXT,
            method TEXT NOT NULL,
            action TEXT NOT NULL,
            repo TEXT,
            path TEXT,
            status INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            denied_by TEXT,
            aborted INTEGER NOT NULL DEFAULT 0,
            duration_ms INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX audit_by_time ON audit (time);
        CREATE INDEX audit_by_repo ON audit (repo, path);
        CREATE INDEX audit_by_subject ON audit (subject);
        CREATE INDEX audit_by_ip ON audit (client_ip);
        CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'audit records are append-only');
        END;
        -- Only retention removes rows, and never one younger than a day.
        CREATE TRIGGER audit_keep_recent BEFORE DELETE ON audit
        WHEN OLD.time > (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000
        BEGIN
            SELECT RAISE(ABORT, 'audit records younger than a day are kept');
        END;
        -- Download statistics per file, maintained from the audit trail as it is written.
        CREATE TABLE download_stats (
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            count INTEGER NOT NULL,
            last_downloaded INTEGER NOT NULL,
            last_downloaded_by TEXT NOT NULL,
            PRIMARY KEY (repo, path)
        ) WITHOUT ROWID;
        """
    )


@edge_migrations()
def m003_access_rules_url_signing_keys(db: Database) -> None:
    # The IP and geo rules an admin stored through the API (one row: the whole set, as JSON);
    # without it the settings file's rules apply.
    db.execute(
        """
        CREATE TABLE access_rules (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            rules TEXT NOT NULL,
            updated INTEGER NOT NULL,
            updated_by TEXT NOT NULL
        )
        """
    )
    # Keys that sign or verify signed URLs; an own key's private half is a 0600 file
    # in the data dir (url-signing/<kid>.pem), never a row.
    db.execute(
        """
        CREATE TABLE url_signing_keys (
            kid TEXT PRIMARY KEY,
            algorithm TEXT NOT NULL,
            public_key TEXT NOT NULL,
            own INTEGER NOT NULL,
            created INTEGER NOT NULL
        )
        """
    )


@edge_migrations()
def m004_transaction_blobs_stored(db: Database) -> None:
    # 1 once the edge has stored the blob for this transaction in a blob store whose writes are
    # durable when they return (S3): then the row, not a request to the store, says it is held.
    db.execute("ALTER TABLE transaction_blobs ADD COLUMN stored INTEGER NOT NULL DEFAULT 0")


@edge_migrations()
def m005_manifests_apart_bundle_changes(db: Database) -> None:
    db.executescript(
        """
        -- A manifest is tens of MB for a big bundle: kept in a table of its own, so that reading
        -- a transaction's state (every upload does) does not read through it.
        CREATE TABLE transaction_manifests (
            transaction_id TEXT PRIMARY KEY REFERENCES transactions(id) ON DELETE CASCADE,
            manifest BLOB NOT NULL            -- the canonical, signed bytes
        );
        INSERT INTO transaction_manifests (transaction_id, manifest) SELECT id, manifest FROM transactions;
        ALTER TABLE transactions DROP COLUMN manifest;
        -- A bundle's claims are written a page at a time while it is committed, before its
        -- received_bundles row (which appears with the commit), so they no longer hang off it.
        CREATE TABLE bundle_claims (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (name, version, repo, path)
        ) WITHOUT ROWID;
        INSERT INTO bundle_claims (name, version, repo, path) SELECT name, version, repo, path FROM bundle_files;
        DROP TABLE bundle_files;
        ALTER TABLE bundle_claims RENAME TO bundle_files;
        CREATE INDEX bundle_files_by_path ON bundle_files (repo, path);
        -- A bundle being committed or removed a page at a time (``repository.bulk``): a restart
        -- rolls back a commit cut short, and finishes a removal.
        CREATE TABLE bundle_changes (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            transaction_id TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('commit', 'remove')),
            bulk_key TEXT NOT NULL,           -- the catalog's change (bulk_changes.key)
            PRIMARY KEY (name, version)
        ) WITHOUT ROWID;
        """
    )


@edge_migrations()
def m006_transaction_files(db: Database) -> None:
    db.executescript(
        """
        -- The files of each OPEN transaction's manifest, written a page at a time as its start
        -- reads the manifest (no reference to transactions: the pages come before the row) and
        -- read a page at a time by its commit; gone once it is committed or ended.
        CREATE TABLE transaction_files (
            transaction_id TEXT NOT NULL,
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha1 TEXT NOT NULL,
            md5 TEXT NOT NULL,
            properties TEXT NOT NULL,         -- JSON: key -> sorted list of values
            PRIMARY KEY (transaction_id, repo, path)
        ) WITHOUT ROWID;
        -- No index by sha256: pages arrive in path order, and an index in sha256 order would take
        -- a write at a random place per file (9 times the cost of a page); the two queries by
        -- sha256 (check_sizes, the blob list at open) sort once instead.
        -- Transactions opened before had no such record: ended, the Distribution service's next
        -- start opens them again and records their files.
        UPDATE transactions SET state = 'ABORTED' WHERE state = 'OPEN';
        """
    )


@edge_migrations()
def m007_audit_packed_addresses(db: Database) -> None:
    # The client address again, packed (version byte, then the address's bytes), and indexed in
    # place of the text: a search by network is then one index range on sqlite and PostgreSQL
    # alike (edge/access/audit_store.py). Records are otherwise never changed, so the rule that
    # forbids it steps aside while the records written before get their packed address.
    db.conn.create_function("packed_address", 1, packed_address, deterministic=True)
    db.executescript(
        """
        ALTER TABLE audit ADD COLUMN client_ip_packed BLOB;
        DROP TRIGGER audit_append_only;
        UPDATE audit SET client_ip_packed = packed_address(client_ip) WHERE client_ip IS NOT NULL;
        CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'audit records are append-only');
        END;
        DROP INDEX audit_by_ip;
        CREATE INDEX audit_by_ip ON audit (client_ip_packed);
        """
    )


@edge_migrations()
def m008_staged_chunks(db: Database) -> None:
    db.executescript(
        """
        -- Where the bytes of a blob still arriving lie, when they are staged in a blob store every
        -- replica shares (edge/shared_staging.py): one row per chunk stored, in the order of the
        -- blob. Their sizes add up to the bytes received, which any replica answers and resumes
        -- from. No reference to transactions: a chunk's row may outlive its transaction's row
        -- for as long as freeing its objects takes.
        CREATE TABLE staged_chunks (
            transaction_id TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            first_byte INTEGER NOT NULL,      -- where the chunk starts in the blob
            size INTEGER NOT NULL,
            name TEXT NOT NULL,               -- the chunk's name in the store's staging area
            etag TEXT NOT NULL,               -- the store's tag of the bytes it holds
            PRIMARY KEY (transaction_id, sha256, first_byte)
        ) WITHOUT ROWID;
        """
    )


@edge_migrations()
def m009_trusted_key_material(db: Database) -> None:
    db.executescript(
        """
        -- The public key each trusted fingerprint stands for, as the edge holds it after its
        -- last import (revocations and expiry merged): replicas of an edge each have a GnuPG
        -- home of their own, and import from here the keys an alias names that theirs lacks.
        CREATE TABLE trusted_key_material (
            fingerprint TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            updated INTEGER NOT NULL
        );
        """
    )


@edge_migrations()
def m010_manifest_chunks(db: Database) -> None:
    db.executescript(
        """
        -- A manifest as rows of at most a MiB each, in order (seq 0, 1, ...): written and read a
        -- row at a time by plain statements on either engine, so a manifest of tens of MB is
        -- never held whole (the one BLOB before needed sqlite's own incremental blob I/O).
        -- A rowid table: rows this large belong out of the primary key's b-tree.
        CREATE TABLE transaction_manifest_chunks (
            transaction_id TEXT NOT NULL REFERENCES transactions(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (transaction_id, seq)
        );
        WITH RECURSIVE chunks (transaction_id, seq, size) AS (
            SELECT transaction_id, 0, length(manifest) FROM transaction_manifests WHERE length(manifest) > 0
            UNION ALL
            SELECT transaction_id, seq + 1, size FROM chunks WHERE (seq + 1) * 1048576 < size
        )
        INSERT INTO transaction_manifest_chunks (transaction_id, seq, data)
        SELECT c.transaction_id, c.seq, substr(m.manifest, c.seq * 1048576 + 1, 1048576)
        FROM chunks c JOIN transaction_manifests m ON m.transaction_id = c.transaction_id;
        DROP TABLE transaction_manifests;
        """
    )


@edge_migrations()
def m011_remote_repos(db: Database) -> None:
    db.executescript(
        """
        -- Smart remote repositories: the configuration (credentials included, never answered
        -- back) of each, beside its row in repos (type REMOTE).
        CREATE TABLE remote_repos (
            key TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            updated INTEGER NOT NULL
        );
        -- The files a remote repo holds in its cache: their size for the cache's bound, when
        -- each was last served (least recently used go first) and last checked upstream.
        CREATE TABLE remote_cache (
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            last_used INTEGER NOT NULL,
            checked INTEGER NOT NULL,
            PRIMARY KEY (repo, path)
        );
        CREATE INDEX remote_cache_by_use ON remote_cache (last_used);
        """
    )


@edge_migrations()
def m012_virtual_repos(db: Database) -> None:
    db.executescript(
        """
        -- Virtual repositories (edge/virtual_repos.py): one key over an ordered list of member
        -- repos, kept as a JSON array of keys; no member's content lives here.
        CREATE TABLE virtual_repos (
            key TEXT PRIMARY KEY,
            members TEXT NOT NULL,
            description TEXT NOT NULL,
            anonymous_read INTEGER NOT NULL,
            created INTEGER NOT NULL,
            modified INTEGER NOT NULL
        );
        -- The member repo that served a download through a virtual repo (``repo`` names the virtual one).
        ALTER TABLE audit ADD COLUMN served_from TEXT;
        """
    )


@edge_migrations()
def m014_pull_state(db: Database) -> None:
    """A pull-mode edge's jobs under way (edge/puller.py), kept across restarts: a job it was
    running goes on where it was (its transaction and what it staged are here too), and one
    that no longer comes in the service's work list (aborted, or ended) is looked up once and
    its open transaction aborted."""
    db.executescript(
        """
        CREATE TABLE pull_jobs (
            distribution_id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,               -- distribute, delete_release_bundle_version
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            transaction_id TEXT               -- once the manifest is verified and its transaction open
        );
        """
    )


@edge_migrations()
def m015_relays(db: Database) -> None:
    db.executescript(
        """
        -- A parent edge relaying a transaction it committed to a child edge (docs/tiers.md): what
        -- the Distribution service asked, and how far it got. RUNNING rows are taken up again
        -- when the edge starts, so a relay cut short by a crash goes on by itself.
        CREATE TABLE relays (
            transaction_id TEXT NOT NULL,
            child TEXT NOT NULL,
            url TEXT NOT NULL,
            token TEXT NOT NULL,
            state TEXT NOT NULL,              -- RUNNING, COMMITTED, FAILED, ABORTED
            error TEXT NOT NULL DEFAULT '',
            total_files INTEGER NOT NULL,
            total_bytes INTEGER NOT NULL,
            distributed_files INTEGER NOT NULL DEFAULT 0,
            distributed_bytes INTEGER NOT NULL DEFAULT 0,
            sent_bytes INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            PRIMARY KEY (transaction_id, child)
        );
        CREATE INDEX relays_by_state ON relays (state);
        """
    )


@edge_migrations()
def m013_edge_sboms(db: Database) -> None:
    db.executescript(
        """
        -- The SBOM a transaction's signed manifest names (none for a manifest without one): its
        -- blob is also in transaction_blobs, so it is asked for, received, checked at commit and
        -- pinned as the files' blobs are; this row says which blob the bundle serves as its SBOM.
        CREATE TABLE transaction_sboms (
            transaction_id TEXT PRIMARY KEY REFERENCES transactions(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL
        ) WITHOUT ROWID;
        """
    )


# On PostgreSQL the schema is the tables these migrations add up to (repository/pg_schema.py).
tables_of(edge_migrations, edge_tables)
