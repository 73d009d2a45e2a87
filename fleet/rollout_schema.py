"""Rollouts: deployments, each device's progress in them, and the feedback devices sent."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlite_utils import Migrations

from repository.pg_schema import tables_of

rollout_tables = MetaData()
rollout_migrations = Migrations("fleet-rollouts")

tables_of(rollout_migrations, rollout_tables)
