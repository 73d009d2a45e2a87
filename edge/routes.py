"""The edge's route table: the distribution API and trusted keys first, then the artifact
API, whose ``api/`` catch-all would otherwise answer them with 404."""

from __future__ import annotations

from aiohttp import web

from repository.http.openapi import openapi_handler
from repository.http.routes import artifact_routes
from wire import protocol

from . import api
from .access.api import access_routes
from .access.security_api import security_routes
from .relay_api import relay_routes
from .virtual_api import virtual_repo_routes

# The protocol's paths (wire.protocol) with route patterns for the ids they take.
TX_ID = "{tx_id:[0-9a-f]{64}}"
SHA256 = "{sha256:[0-9a-f]{64}}"
BLOB = protocol.blob_path(TX_ID, SHA256)


def edge_routes() -> list[web.AbstractRouteDef]:
    return [
        web.post(protocol.TRANSACTIONS, api.start_transaction, name="tx_start"),
        web.get(protocol.transaction_path(TX_ID), api.transaction_status, name="tx_status", allow_head=False),
        web.get(protocol.missing_path(TX_ID), api.missing_blobs, name="tx_missing", allow_head=False),
        web.post(protocol.commit_path(TX_ID), api.commit_transaction, name="tx_commit"),
        web.post(protocol.abort_path(TX_ID), api.abort_transaction, name="tx_abort"),
        web.head(BLOB, api.blob_received, name="tx_blob_received"),
        web.put(BLOB, api.upload_blob, name="tx_blob_upload"),
        web.post(protocol.batch_path(TX_ID), api.upload_blob_batch, name="tx_blob_batch"),
        web.get(protocol.BUNDLES, api.list_bundles, name="bundles_list", allow_head=False),
        web.delete(protocol.BUNDLES + "/{name}/{version}", api.delete_bundle, name="bundle_delete"),
        web.get(protocol.RELEASE_BUNDLES + "/{name}/{version}/sbom", api.bundle_sbom, name="bundle_sbom"),
        web.post(protocol.TRUSTED_KEYS, api.trust_key, name="trusted_key_add"),
        web.get(protocol.TRUSTED_KEYS, api.list_trusted_keys, name="trusted_key_list", allow_head=False),
        web.delete(protocol.TRUSTED_KEYS + "/{alias}", api.remove_trusted_key, name="trusted_key_remove"),
        web.get("/artifactory/api/openapi.json", openapi_handler("edge"), name="openapi", allow_head=False),
    ]


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(edge_routes())
    app.router.add_routes(relay_routes())
    app.router.add_routes(access_routes())
    app.router.add_routes(security_routes())
    app.router.add_routes(virtual_repo_routes())
    app.router.add_routes(artifact_routes())
