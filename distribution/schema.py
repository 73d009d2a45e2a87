"""The Distribution service's own tables, beside the artifact catalog in the same database."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .tables import distribution_tables

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


@distribution_migrations()
def m002_edges_and_distributions(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE edges (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            site_name TEXT NOT NULL,
            city_name TEXT NOT NULL,
            country_code TEXT NOT NULL,
            token TEXT NOT NULL,              -- the edge's distributor token; never answered by any API
            service_id TEXT NOT NULL,
            created INTEGER NOT NULL,
            last_seen INTEGER,                -- last answer from the edge
            healthy INTEGER,                  -- NULL: never checked
            last_error TEXT
        ) WITHOUT ROWID;
        CREATE TABLE distributions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            friendly_id INTEGER NOT NULL,     -- 1, 2, ... per bundle version
            type TEXT NOT NULL,               -- distribute, delete_release_bundle_version
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            rules TEXT NOT NULL,              -- JSON, as asked
            on_success TEXT NOT NULL,         -- keep, delete (delete jobs only)
            created INTEGER NOT NULL,
            finished INTEGER,
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        );
        CREATE INDEX distributions_by_bundle ON distributions (name, version, id);
        CREATE TABLE distribution_jobs (
            distribution_id INTEGER NOT NULL REFERENCES distributions (id) ON DELETE CASCADE,
            edge TEXT NOT NULL,               -- the edge's name when the job was made
            service_id TEXT NOT NULL,
            state TEXT NOT NULL,              -- In queue, In progress, Completed, Failed
            general_error TEXT NOT NULL DEFAULT '',
            transaction_id TEXT,
            total_files INTEGER NOT NULL,
            total_bytes INTEGER NOT NULL,
            distributed_files INTEGER NOT NULL DEFAULT 0,
            distributed_bytes INTEGER NOT NULL DEFAULT 0,
            sent_files INTEGER NOT NULL DEFAULT 0,  -- what crossed the wire (blobs the edge lacked)
            sent_bytes INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER NOT NULL DEFAULT 0,
            started INTEGER,
            finished INTEGER,
            PRIMARY KEY (distribution_id, edge)
        ) WITHOUT ROWID;
        CREATE INDEX jobs_by_state ON distribution_jobs (state, next_attempt);
        """
    )


@distribution_migrations()
def m003_signed_manifests_apart(db: Database) -> None:
    """Manifests are megabytes; kept inside the WITHOUT ROWID bundles table they made every
    foreign-key check of a new bundle's artifacts read through them. They live apart now."""
    db.executescript(
        """
        CREATE TABLE bundle_manifests (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest BLOB NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (name, version),
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        );
        INSERT INTO bundle_manifests (name, version, manifest, signature)
            SELECT name, version, manifest, signature FROM bundles WHERE manifest IS NOT NULL;
        ALTER TABLE bundles DROP COLUMN manifest;
        ALTER TABLE bundles DROP COLUMN signature;
        """
    )


@distribution_migrations()
def m004_bundle_artifacts_by_sha256(db: Database) -> None:
    """Every bundle version pins the blobs it lists; collecting a blob asks by sha256, and the
    scrub reads them in sha256 order (ServiceBlobs)."""
    db.execute("CREATE INDEX bundle_artifacts_by_sha256 ON bundle_artifacts (sha256)")


@distribution_migrations()
def m005_bundle_staging(db: Database) -> None:
    """What a create or update selects, a page at a time, before it becomes a bundle's content in
    one statement (``BundleStore.commit_staged``): the selection is never held in memory, and a
    bundle is still stored whole or not at all. Rows of a create cut off by a crash are cleared
    at the next start (``staged_at``)."""
    db.executescript(
        """
        CREATE TABLE bundle_staging (
            token TEXT NOT NULL,
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            sha1 TEXT NOT NULL,
            md5 TEXT NOT NULL,
            size INTEGER NOT NULL,
            properties TEXT NOT NULL,
            staged_at INTEGER NOT NULL,
            PRIMARY KEY (token, target)
        ) WITHOUT ROWID;
        CREATE INDEX bundle_staging_by_sha256 ON bundle_staging (token, sha256);
        """
    )


@distribution_migrations()
def m006_manifest_last(db: Database) -> None:
    """The manifest column last: sqlite writes a ``zeroblob`` without holding its bytes only when
    nothing follows it in the row, and the manifest is written into one (``mark_signed``). With
    the signature after it, sqlite made the whole manifest of zeros in memory (30 MB, twice, for
    100,000 files)."""
    db.executescript(
        """
        CREATE TABLE bundle_manifests_new (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            signature TEXT NOT NULL,
            manifest BLOB NOT NULL,
            PRIMARY KEY (name, version),
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        );
        INSERT INTO bundle_manifests_new (name, version, signature, manifest)
            SELECT name, version, signature, manifest FROM bundle_manifests;
        DROP TABLE bundle_manifests;
        ALTER TABLE bundle_manifests_new RENAME TO bundle_manifests;
        """
    )


# Bytes of each chunk a manifest stored whole is cut into by m007 (what ``BundleStore`` writes
# since may differ: it reads the chunks in order, whatever their sizes).
M007_CHUNK = 1024 * 1024


@distribution_migrations()
def m007_manifest_chunks(db: Database) -> None:
    """A manifest is kept as rows of chunks beside a row of its size and signature: written and
    read a chunk at a time with plain SQL, which PostgreSQL runs as sqlite does (sqlite's
    ``zeroblob`` and incremental blob I/O have no PostgreSQL form), and never held whole. A
    manifest stored whole before is cut into chunks here, read a chunk at a time."""
    db.executescript(
        """
        ALTER TABLE bundle_manifests RENAME TO bundle_manifests_whole;
        CREATE TABLE bundle_manifests (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            signature TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (name, version),
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        );
        CREATE TABLE bundle_manifest_chunks (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            seq INTEGER NOT NULL,             -- 0, 1, ...: the chunks in order
            data BLOB NOT NULL,
            PRIMARY KEY (name, version, seq),
            FOREIGN KEY (name, version) REFERENCES bundle_manifests (name, version) ON DELETE CASCADE
        );
        INSERT INTO bundle_manifests (name, version, signature, size)
            SELECT name, version, signature, length(manifest) FROM bundle_manifests_whole;
        """
    )
    whole = db.execute("SELECT rowid, name, version, length(manifest) FROM bundle_manifests_whole").fetchall()
    for rowid, name, version, size in whole:
        with db.conn.blobopen("bundle_manifests_whole", "manifest", rowid, readonly=True) as blob:
            for seq, offset in enumerate(range(0, size, M007_CHUNK)):
                db.execute(
                    "INSERT INTO bundle_manifest_chunks (name, version, seq, data) VALUES (?, ?, ?, ?)",
                    [name, version, seq, blob.read(min(M007_CHUNK, size - offset))],
                )
    db.execute("DROP TABLE bundle_manifests_whole")


@distribution_migrations()
def m008_job_leases(db: Database) -> None:
    """Service replicas on one database share the job queue: a job runs where its lease is held,
    renewed while it runs; a lease its holder stopped renewing (a crash) expires and another
    replica takes the job over. ``lease_expires`` 0: nobody holds it."""
    db.executescript(
        """
        ALTER TABLE distribution_jobs ADD COLUMN lease_holder TEXT;
        ALTER TABLE distribution_jobs ADD COLUMN lease_expires INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX jobs_by_edge ON distribution_jobs (edge, lease_expires);
        """
    )


@distribution_migrations()
def m009_edge_tiers(db: Database) -> None:
    """An edge may be registered under a parent edge that relays bundles to it (docs/tiers.md):
    ``parent`` names it, NULL for an edge the service pushes to directly."""
    db.executescript("ALTER TABLE edges ADD COLUMN parent TEXT;")


@distribution_migrations()
def m010_pull_mode_edges(db: Database) -> None:
    """An edge in ``pull`` mode is never called: it polls for its work with a credential of its own,
    kept here as its sha256 only (the credential itself is answered once, when it is minted). Its
    ``url`` and ``token`` are empty: the service is never told how to reach it."""
    db.executescript(
        """
        ALTER TABLE edges ADD COLUMN mode TEXT NOT NULL DEFAULT 'push';
        ALTER TABLE edges ADD COLUMN credential_sha256 TEXT;
        """
    )


@distribution_migrations()
def m011_webhooks(db: Database) -> None:
    """Webhook subscriptions, the events the service published, and one delivery row per
    (subscription, event): the queue the deliverer works through in ``seq`` order per
    subscription. Events are written in the transaction of the change they tell of
    (``distribution/webhook_events.py``), so a crash never loses or invents one."""
    db.executescript(
        """
        CREATE TABLE webhook_subscriptions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            url TEXT NOT NULL,
            events TEXT NOT NULL,             -- JSON list of event names, or ["*"]
            secret TEXT NOT NULL,             -- the HMAC key; answered once, at creation
            enabled INTEGER NOT NULL,
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0,  -- the last delivery's place in this subscription's queue
            disabled_reason TEXT NOT NULL DEFAULT '',
            lease_holder TEXT,                -- the replica delivering to it now
            lease_expires INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY,              -- the event's uuid, sent as X-Webhook-Id
            type TEXT NOT NULL,
            time INTEGER NOT NULL,
            body TEXT NOT NULL                -- the exact JSON sent, the same bytes at every attempt
        ) WITHOUT ROWID;
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            subscription_id INTEGER NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL REFERENCES webhook_events (id),
            state TEXT NOT NULL,              -- pending, delivered, failed
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER NOT NULL DEFAULT 0,
            last_status INTEGER,              -- the receiver's last HTTP status
            last_error TEXT NOT NULL DEFAULT '',
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            finished INTEGER
        );
        CREATE UNIQUE INDEX webhook_deliveries_in_order ON webhook_deliveries (subscription_id, seq);
        CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (subscription_id, state, seq);
        CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
        """
    )


@distribution_migrations()
def m012_bundle_sboms(db: Database) -> None:
    """Each bundle version's CycloneDX SBOM, a blob of the service's store named here by its
    sha256: built when the bundle is created, pinned with it, and named in its signed
    manifest. A bundle made before SBOMs existed has no row (and its manifest no ``sbom``)."""
    db.executescript(
        """
        CREATE TABLE bundle_sboms (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (name, version),
            FOREIGN KEY (name, version) REFERENCES bundles (name, version) ON DELETE CASCADE
        ) WITHOUT ROWID;
        CREATE INDEX bundle_sboms_by_sha256 ON bundle_sboms (sha256);
        """
    )


# On PostgreSQL the schema is the tables these migrations add up to (repository/pg_schema.py).
tables_of(distribution_migrations, distribution_tables)
