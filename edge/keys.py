"""The edge's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

from aiohttp import web

from .settings import EdgeSettings
from .transactions import Transactions
from .trust import TrustedKeys

settings_key = web.AppKey("settings", EdgeSettings)
trusted_keys_key = web.AppKey("trusted_keys", TrustedKeys)
transactions_key = web.AppKey("transactions", Transactions)
