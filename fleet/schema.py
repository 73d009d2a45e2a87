"""The fleet's tables, in two migration sets: devices (enrollment, identity, heartbeats,
apps) and rollouts (deployments, per-device progress, feedback)."""

from __future__ import annotations

from .device_schema import device_migrations
from .rollout_schema import rollout_migrations

migrations = (device_migrations, rollout_migrations)
