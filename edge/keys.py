"""The edge's own typed app keys (the artifact core's live in repository.http.keys)."""

from __future__ import annotations

from aiohttp import web

from .access.audit import AuditTrail
from .access.targets import TargetStore
from .access.users import UserStore
from .settings import EdgeSettings
from .transactions import Transactions
from .trust import TrustedKeys
from .virtual_repos import VirtualRepoStore

settings_key = web.AppKey("settings", EdgeSettings)
trusted_keys_key = web.AppKey("trusted_keys", TrustedKeys)
transactions_key = web.AppKey("transactions", Transactions)
users_key = web.AppKey("users", UserStore)
permission_targets_key = web.AppKey("permission_targets", TargetStore)
audit_trail_key = web.AppKey("audit_trail", AuditTrail)
# Whether this process starts the node (the only process, or the first worker at the node's
# start): it alone clears what a stop of the whole node left behind (staging of transactions
# no longer open, geo snapshots), which a restarted worker must leave to the others using it.
starts_node_key = web.AppKey("starts_node", bool)
# The worker number a process answers as X-Edge-Worker (edge/workers.py); 0: the only process.
worker_key = web.AppKey("worker", int)
# The virtual repos' store, for the API that changes them (the artifact API reads them through
# repository.http.keys.virtual_repos, the same object).
virtual_repos_key = web.AppKey("virtual_repos_store", VirtualRepoStore)
