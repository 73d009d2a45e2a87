"""The edge's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

from aiohttp import web

from .settings import EdgeSettings

settings_key = web.AppKey("settings", EdgeSettings)
