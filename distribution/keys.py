"""The Distribution service's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .bundles import BundleService
from .runner import JobRunner
from .settings import DistributionSettings
from .signing import Signer
from .webhook_events import Publisher
from .webhook_sender import WebhookDeliverer

settings_key = web.AppKey("settings", DistributionSettings)
signer_key = web.AppKey("signer", Signer)
bundles_key = web.AppKey("bundles", BundleService)
# one client session for every call to edges (pushes, health checks, key propagation)
http_key = web.AppKey("http", aiohttp.ClientSession)
runner_key = web.AppKey("runner", JobRunner)
# webhooks: the deliverer (its store answers the REST calls), and the function the fleet publishes
# its events through (``webhook_events.publish``: this package never imports the fleet)
webhooks_key = web.AppKey("webhooks", WebhookDeliverer)
publish_key: web.AppKey[Publisher] = web.AppKey("publish")
