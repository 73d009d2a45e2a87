"""The edge's route table: the distribution API and trusted keys first, then the artifact
API, whose ``api/`` catch-all would otherwise answer them with 404."""

from __future__ import annotations

from aiohttp import web

from repository.http.openapi import openapi_handler
from repository.http.routes import artifact_routes

from . import api
from .access.api import access_routes
from .access.security_api import security_routes

TX = "/artifactory/api/distribution/transactions/{tx_id:[0-9a-f]{64}}"
BLOB = TX + "/blobs/{sha256:[0-9a-f]{64}}"
KEYS = "/artifactory/api/security/keys/trusted"
BUNDLES = "/artifactory/api/distribution/bundles"


def edge_routes() -> list[web.AbstractRouteDef]:
    return [
        web.post("/artifactory/api/distribution/transactions", api.start_transaction, name="tx_start"),
        web.get(TX, api.transaction_status, name="tx_status", allow_head=False),
        web.post(TX + "/commit", api.commit_transaction, name="tx_commit"),
        web.post(TX + "/abort", api.abort_transaction, name="tx_abort"),
        web.head(BLOB, api.blob_received, name="tx_blob_received"),
        web.put(BLOB, api.upload_blob, name="tx_blob_upload"),
        web.post(TX + "/blobs", api.upload_blob_batch, name="tx_blob_batch"),
        web.get(BUNDLES, api.list_bundles, name="bundles_list", allow_head=False),
        web.delete(BUNDLES + "/{name}/{version}", api.delete_bundle, name="bundle_delete"),
        web.post(KEYS, api.trust_key, name="trusted_key_add"),
        web.get(KEYS, api.list_trusted_keys, name="trusted_key_list", allow_head=False),
        web.delete(KEYS + "/{alias}", api.remove_trusted_key, name="trusted_key_remove"),
        web.get("/artifactory/api/openapi.json", openapi_handler("edge"), name="openapi", allow_head=False),
    ]


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(edge_routes())
    app.router.add_routes(access_routes())
    app.router.add_routes(security_routes())
    app.router.add_routes(artifact_routes())
