"""The runtime inventory's app keys."""

from __future__ import annotations

from aiohttp import web

from .runtime_ingest import RuntimeIngest
from .runtime_policy import RuntimePolicy
from .runtime_queries import RuntimeQueries

runtime_ingest_key = web.AppKey("fleet_runtime_ingest", RuntimeIngest)
runtime_queries_key = web.AppKey("fleet_runtime_queries", RuntimeQueries)
runtime_policy_key = web.AppKey("fleet_runtime_policy", RuntimePolicy)
