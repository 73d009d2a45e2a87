"""The Distribution service's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

from aiohttp import web

from .bundles import BundleService
from .settings import DistributionSettings
from .signing import Signer

settings_key = web.AppKey("settings", DistributionSettings)
signer_key = web.AppKey("signer", Signer)
bundles_key = web.AppKey("bundles", BundleService)
