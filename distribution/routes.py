"""The Distribution service's route table: its own API plus the shared artifact API for source repos."""

from __future__ import annotations

from aiohttp import web

from repository.http.openapi import openapi_handler
from repository.http.repos_api import create_repository
from repository.http.routes import artifact_routes

from . import api, distributions_api, sbom_api, webhooks_api

V1 = "/distribution/api/v1"
BUNDLE = V1 + "/release_bundle/{name}/{version}"
DISTRIBUTION = V1 + "/distribution/{name}/{version}"
WEBHOOK = V1 + "/webhooks/{id}"


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.post(V1 + "/release_bundle", api.create_bundle, name="bundle_create"),
            web.get(V1 + "/release_bundle", api.list_bundles, name="bundle_list"),
            web.get(V1 + "/release_bundle/{name}", api.list_bundles, name="bundle_versions"),
            web.get(BUNDLE, api.get_bundle, name="bundle_get"),
            web.put(BUNDLE, api.update_bundle, name="bundle_update"),
            web.delete(BUNDLE, api.delete_bundle, name="bundle_delete"),
            web.post(BUNDLE + "/sign", api.sign_bundle, name="bundle_sign"),
            web.get(BUNDLE + "/manifest", api.bundle_manifest, name="bundle_manifest"),
            web.get(BUNDLE + "/signature", api.bundle_signature, name="bundle_signature"),
            web.get(BUNDLE + "/sbom", sbom_api.bundle_sbom, name="bundle_sbom"),
            web.get(V1 + "/keys/gpg", api.list_keys, name="keys_list"),
            web.post(V1 + "/keys/gpg", api.upload_key, name="keys_upload"),
            web.get(V1 + "/keys/gpg/public", api.export_public_key, name="keys_public"),
            web.put(V1 + "/keys/gpg/{alias}/default", api.set_default_key, name="keys_default"),
            web.post(V1 + "/keys/gpg/propagate", distributions_api.propagate_keys, name="keys_propagate"),
            web.post(V1 + "/edges", distributions_api.add_edge, name="edge_add"),
            web.get(V1 + "/edges", distributions_api.list_edges, name="edge_list"),
            web.delete(V1 + "/edges/{edge}", distributions_api.remove_edge, name="edge_remove"),
            web.post(DISTRIBUTION, distributions_api.distribute, name="distribute"),
            web.post(DISTRIBUTION + "/delete", distributions_api.undistribute, name="undistribute"),
            web.post(DISTRIBUTION + "/repair", distributions_api.repair, name="repair"),
            web.put(DISTRIBUTION + "/abort", distributions_api.abort, name="distribution_abort"),
            web.get(BUNDLE + "/distribution", distributions_api.distribution_status, name="distribution_list"),
            web.get(BUNDLE + "/distribution/{id}", distributions_api.distribution_status, name="distribution_get"),
            web.post(V1 + "/webhooks", webhooks_api.add_webhook, name="webhook_add"),
            web.get(V1 + "/webhooks", webhooks_api.list_webhooks, name="webhook_list"),
            web.get(WEBHOOK, webhooks_api.get_webhook, name="webhook_get"),
            web.patch(WEBHOOK, webhooks_api.update_webhook, name="webhook_update"),
            web.delete(WEBHOOK, webhooks_api.remove_webhook, name="webhook_remove"),
            web.get(WEBHOOK + "/deliveries", webhooks_api.list_deliveries, name="webhook_deliveries"),
            web.post(V1 + "/webhooks/deliveries/{id}/redeliver", webhooks_api.redeliver, name="redeliver"),
            web.get("/distribution/api/openapi.json", openapi_handler("distribution"), name="openapi"),
            web.put("/artifactory/api/repositories/{key}", create_repository, name="repository_create"),
            *artifact_routes(),
        ]
    )
