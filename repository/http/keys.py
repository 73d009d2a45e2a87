"""Typed app and request keys for the artifact API, one place for all of them."""

from __future__ import annotations

from aiohttp import web
from cachetools import LRUCache

from repository.artifacts import ArtifactService
from repository.catalog import Catalog
from repository.identity import Authenticator
from repository.policy import ArtifactPolicy
from repository.tokens import Principal, TokenStore
from storage_backends import StorageBackend

storage = web.AppKey("storage", StorageBackend)
catalog = web.AppKey("catalog", Catalog)
tokens = web.AppKey("tokens", TokenStore)
policy = web.AppKey("policy", ArtifactPolicy)
artifacts = web.AppKey("artifacts", ArtifactService)
authenticator = web.AppKey("authenticator", Authenticator)
# Small blobs by sha256, bounded in bytes: immutable content needs no invalidation.
small_blobs = web.AppKey("small_blobs", LRUCache)

# Request-scoped: set by the access pipeline before any handler runs.
principal = web.RequestKey("principal", Principal)
