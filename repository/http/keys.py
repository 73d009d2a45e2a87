"""Typed app and request keys for the artifact API, one place for all of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from cachetools import LRUCache

from repository.artifacts import ArtifactService
from repository.catalog import Catalog
from repository.identity import Authenticator
from repository.permissions import Permissions
from repository.policy import ArtifactPolicy
from repository.stats import StatsSource
from repository.tokens import Principal, TokenStore
from repository.virtual import VirtualRepos
from storage_backends import StorageBackend

storage = web.AppKey("storage", StorageBackend)
catalog = web.AppKey("catalog", Catalog)
tokens = web.AppKey("tokens", TokenStore)
policy = web.AppKey("policy", ArtifactPolicy)
artifacts = web.AppKey("artifacts", ArtifactService)
authenticator = web.AppKey("authenticator", Authenticator)
permissions = web.AppKey("permissions", Permissions)
# Download statistics, where the node keeps them (an edge does, from its audit trail).
download_stats = web.AppKey("download_stats", StatsSource)
# Whether a request carries a signed URL verified for its own path (a node with signed URLs
# says): such a URL is an admin's grant to read that one file, whatever roles and targets say.
signed_read: web.AppKey[Callable[[web.Request], bool]] = web.AppKey("signed_read")
# Readiness checks a node adds beside its database and blob store: by name, those that apply
# now (an edge's ``geoip`` while countries are in use). Each raises when the node is not ready.
readiness_checks: web.AppKey[Callable[[], dict[str, Callable[[], Awaitable[None]]]]] = web.AppKey("readiness_checks")
# Virtual repos, where the node has them (an edge does), and whether the access rules that apply
# to a member repo (an edge's per-repo IP and geo rules) admit the request: a member they refuse
# is skipped when a virtual repo resolves, as one the caller may not read is.
virtual_repos = web.AppKey("virtual_repos", VirtualRepos)
member_admits: web.AppKey[Callable[[web.Request, str], bool]] = web.AppKey("member_admits")
# Small blobs by sha256, bounded in bytes: immutable content needs no invalidation.
small_blobs = web.AppKey("small_blobs", LRUCache)

# Request-scoped: set by the access pipeline before any handler runs.
principal = web.RequestKey("principal", Principal)
# The rule that refused the request, when a permission check did; for the audit trail.
denied_by = web.RequestKey("denied_by", str)
# The request's id, answered as X-Request-ID and written on its log lines (request_ids.py).
request_id = web.RequestKey("request_id", str)
# The member repo that served a download of a virtual repo's path; for the audit trail.
served_from = web.RequestKey("served_from", str)
