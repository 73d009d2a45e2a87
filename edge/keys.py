"""The edge's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

from aiohttp import web

from .access.audit import AuditTrail
from .access.targets import TargetStore
from .access.users import UserStore
from .settings import EdgeSettings
from .transactions import Transactions
from .trust import TrustedKeys

settings_key = web.AppKey("settings", EdgeSettings)
trusted_keys_key = web.AppKey("trusted_keys", TrustedKeys)
transactions_key = web.AppKey("transactions", Transactions)
users_key = web.AppKey("users", UserStore)
permission_targets_key = web.AppKey("permission_targets", TargetStore)
audit_trail_key = web.AppKey("audit_trail", AuditTrail)
