"""The rollout side's typed app keys."""

from __future__ import annotations

from aiohttp import web

from .feedback_writer import FeedbackWriter
from .rollout_actions import RolloutActions
from .rollout_store import DeploymentStore
from .rollout_url_key import FleetUrlKey, UrlKeyPusher

deployments_key = web.AppKey("fleet_deployments", DeploymentStore)
rollout_actions_key = web.AppKey("fleet_rollout_actions", RolloutActions)
url_key_key = web.AppKey("fleet_url_key", FleetUrlKey)
url_key_pusher_key = web.AppKey("fleet_url_key_pusher", UrlKeyPusher)
feedback_writer_key = web.AppKey("fleet_feedback_writer", FeedbackWriter)
