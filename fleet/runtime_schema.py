"""Runtime inventory: what each device runs now, a bounded history of what changed, drift of
installed files, events, and each group's sensor settings.

- ``fleet_runtime_state``: per device, the report it last had acknowledged (``seq``).
- ``fleet_runtime_processes``: the latest process set of each device; ``ident`` is the
  sha256 that says what a process is (its script's, else its executable's), looked up in
  ``bundle_artifacts`` by that table's sha256 index for provenance.
- ``fleet_runtime_changes``: the newest ``fleet_runtime_history`` reports of each device,
  each as a summary (started and stopped processes).
- ``fleet_runtime_drift``: files of a device's installed apps that differ from their
  manifest (``kind``: modified, missing, extra).
- ``fleet_runtime_events``: an unknown executable started, drift found; the newest
  ``fleet_runtime_events`` kept.
- ``fleet_runtime_groups``: a group's sensor settings (``wire.runtime.RuntimeSettings``);
  groups without a row use the defaults.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .runtime_tables import runtime_tables

runtime_migrations = Migrations("fleet-runtime")


@runtime_migrations()
def m001_runtime(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE fleet_runtime_state (
            device_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            updated INTEGER NOT NULL
        );
        CREATE TABLE fleet_runtime_processes (
            device_id TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started INTEGER NOT NULL,
            exe TEXT NOT NULL,
            sha256 TEXT,
            username TEXT NOT NULL,
            script TEXT,
            script_sha256 TEXT,
            ident TEXT,
            container TEXT,
            cmdline TEXT,
            seen INTEGER NOT NULL,
            PRIMARY KEY (device_id, pid, started)
        ) WITHOUT ROWID;
        CREATE INDEX fleet_runtime_processes_by_ident ON fleet_runtime_processes (ident, device_id);
        CREATE TABLE fleet_runtime_changes (
            device_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            time INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (device_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE fleet_runtime_drift (
            device_id TEXT NOT NULL,
            app TEXT NOT NULL,
            path TEXT NOT NULL,
            version TEXT NOT NULL,
            kind TEXT NOT NULL,
            found INTEGER NOT NULL,
            PRIMARY KEY (device_id, app, path)
        ) WITHOUT ROWID;
        CREATE TABLE fleet_runtime_events (
            id INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            device_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            sha256 TEXT,
            path TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE TABLE fleet_runtime_groups (
            grp TEXT PRIMARY KEY,
            settings TEXT NOT NULL
        );
        """
    )


tables_of(runtime_migrations, runtime_tables)
