"""Devices: enrollment tokens, enrolled devices with their tags and installed apps, a bounded
heartbeat history, and the apps the fleet installs.

- ``fleet_enrollment_tokens``: only the sha256 of a token is kept; ``grp`` and ``tags``
  (JSON object) are what a device enrolled with it gets; ``revoked`` is a time or NULL.
- ``fleet_devices``: ``credential_sha256`` identifies a device's calls; ``revoked`` NULL
  means active; ``last_seen`` is the time of its last check-in (ms; NULL: never);
  ``heartbeat`` is the latest heartbeat's JSON (``wire.fleet.Heartbeat``); ``apps`` is its
  ``apps`` alone, as ``fleet_device_apps`` holds them (NULL: not written yet), so that a
  heartbeat rewrites those rows only when they change.
- ``fleet_device_tags`` and ``fleet_device_apps``: a device's tags and what it runs (from
  its own heartbeats), apart so that the fleet list filters by them through an index.
  The tags ``site``, ``city`` and ``country`` place a device for the nearest edge.
- ``fleet_heartbeats``: the last heartbeats of each device, bounded per device.
- ``fleet_apps``: how an app installs (``wire.fleet.AppSpec``).
- ``fleet_groups``: a group's poll interval, set by an operator: its devices' now, and what a
  device enrolled into the group later starts with (groups without a row use the default).
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .device_tables import device_tables

device_migrations = Migrations("fleet-devices")


@device_migrations()
def m001_devices(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE fleet_enrollment_tokens (
            id TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            grp TEXT NOT NULL,
            tags TEXT NOT NULL,
            expires INTEGER NOT NULL,
            revoked INTEGER,
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            used INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE fleet_devices (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            grp TEXT NOT NULL,
            credential_sha256 TEXT NOT NULL UNIQUE,
            token_id TEXT NOT NULL,
            enrolled INTEGER NOT NULL,
            revoked INTEGER,
            poll_interval INTEGER NOT NULL,
            last_seen INTEGER,
            agent_version TEXT NOT NULL DEFAULT '',
            heartbeat TEXT
        );
        CREATE INDEX fleet_devices_by_group ON fleet_devices (grp, name);
        CREATE INDEX fleet_devices_by_last_seen ON fleet_devices (last_seen);
        CREATE TABLE fleet_device_tags (
            device_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (device_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX fleet_device_tags_by_value ON fleet_device_tags (key, value, device_id);
        CREATE TABLE fleet_device_apps (
            device_id TEXT NOT NULL,
            app TEXT NOT NULL,
            version TEXT,
            previous TEXT,
            PRIMARY KEY (device_id, app)
        ) WITHOUT ROWID;
        CREATE INDEX fleet_device_apps_by_version ON fleet_device_apps (app, version, device_id);
        CREATE TABLE fleet_heartbeats (
            device_id TEXT NOT NULL,
            time INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (device_id, time)
        ) WITHOUT ROWID;
        CREATE TABLE fleet_apps (
            name TEXT PRIMARY KEY,
            bundle TEXT NOT NULL,
            install_dir TEXT NOT NULL,
            pre_install TEXT,
            restart TEXT,
            health_command TEXT,
            health_url TEXT,
            health_timeout INTEGER NOT NULL,
            keep INTEGER NOT NULL,
            created INTEGER NOT NULL,
            modified INTEGER NOT NULL
        );
        """
    )


@device_migrations()
def m002_group_poll_intervals(db: Database) -> None:
    db.execute("CREATE TABLE fleet_groups (grp TEXT PRIMARY KEY, poll_interval INTEGER NOT NULL)")


@device_migrations()
def m003_device_apps_json(db: Database) -> None:
    db.execute("ALTER TABLE fleet_devices ADD COLUMN apps TEXT")


tables_of(device_migrations, device_tables)
