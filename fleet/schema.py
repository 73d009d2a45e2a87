"""The fleet's tables, in three migration sets: devices (enrollment, identity, heartbeats,
apps), rollouts (deployments, per-device progress, feedback) and runtime (what devices run)."""

from __future__ import annotations

from .device_schema import device_migrations
from .rollout_schema import rollout_migrations
from .runtime_schema import runtime_migrations

migrations = (device_migrations, rollout_migrations, runtime_migrations)
