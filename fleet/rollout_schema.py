"""Rollouts: deployments, each device's progress in them, and the feedback devices sent.

- ``fleet_deployments``: what was asked (app, version, the app's install spec as it was at
  creation, targets, thresholds, window) and where it is: ``state`` (running, paused,
  halted, completed, canceled, rolled_back), ``phase`` (the last started phase) and ``done``
  (1 once no device has anything left to do: it leaves the check-in's view).
- ``fleet_phases``: per phase, its size and its devices by outcome, kept in step with
  ``fleet_targets`` in the transaction of each change, so the phase machine reads one row.
- ``fleet_targets``: one row per targeted device, resolved at creation: its phase, the state
  of its install action (``pending`` until it reports; ``by_device`` says whether the state
  is the device's own report or the control plane's decision), the version it ran before
  (``previous``: what a rollback returns to), and its rollback action (``rb_*``; NULL: none).
- ``fleet_feedback``: the last reports of each action, bounded per action.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from repository.pg_schema import tables_of

from .rollout_tables import rollout_tables

rollout_migrations = Migrations("fleet-rollouts")


@rollout_migrations()
def m001_rollouts(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE fleet_deployments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            app TEXT NOT NULL,
            version TEXT NOT NULL,
            bundle TEXT NOT NULL,
            app_spec TEXT NOT NULL,
            targets TEXT NOT NULL,
            phases TEXT NOT NULL,
            success_threshold TEXT NOT NULL,
            halt_on_failures TEXT NOT NULL,
            maintenance_window TEXT,
            allow_downgrade INTEGER NOT NULL,
            state TEXT NOT NULL,
            phase INTEGER NOT NULL,
            total INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            created INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            updated INTEGER NOT NULL
        );
        CREATE INDEX fleet_deployments_by_done ON fleet_deployments (done, id);
        CREATE TABLE fleet_phases (
            deployment_id INTEGER NOT NULL,
            phase INTEGER NOT NULL,
            size INTEGER NOT NULL,
            succeeded INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0,
            canceled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (deployment_id, phase)
        ) WITHOUT ROWID;
        CREATE TABLE fleet_targets (
            deployment_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            device_id TEXT NOT NULL,
            phase INTEGER NOT NULL,
            state TEXT NOT NULL,
            by_device INTEGER NOT NULL DEFAULT 0,
            step TEXT,
            message TEXT NOT NULL DEFAULT '',
            version TEXT,
            previous TEXT,
            rolled_back INTEGER NOT NULL DEFAULT 0,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            bytes_total INTEGER NOT NULL DEFAULT 0,
            reports INTEGER NOT NULL DEFAULT 0,
            updated INTEGER NOT NULL,
            rb_state TEXT,
            rb_step TEXT,
            rb_message TEXT NOT NULL DEFAULT '',
            rb_updated INTEGER,
            PRIMARY KEY (deployment_id, seq)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX fleet_targets_by_device ON fleet_targets (device_id, deployment_id);
        CREATE INDEX fleet_targets_by_state ON fleet_targets (deployment_id, state);
        CREATE INDEX fleet_targets_by_rb_state ON fleet_targets (deployment_id, rb_state);
        CREATE TABLE fleet_feedback (
            deployment_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            n INTEGER NOT NULL,
            received INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (deployment_id, seq, kind, n)
        ) WITHOUT ROWID;
        """
    )


tables_of(rollout_migrations, rollout_tables)
