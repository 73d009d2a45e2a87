"""The console's route table, all under ``/ui/``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from repository.console.setup import UI, static_file

from . import bundle_views, distribution_views, edge_views, fleet_views, sbom_views, webhook_views

BUNDLE = UI + "/bundles/{name}/{version}"
WEBHOOK = UI + "/webhooks/{id}"
STATIC = Path(__file__).parent / "static"


def setup_console_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get(UI + "/bundles", bundle_views.bundle_list, name="console_bundles"),
            web.post(UI + "/bundles", bundle_views.create_bundle, name="console_bundle_create"),
            web.get(UI + "/bundles/new", bundle_views.new_bundle, name="console_bundle_new"),
            web.get(BUNDLE, bundle_views.bundle_page, name="console_bundle"),
            web.get(BUNDLE + "/sbom", sbom_views.sbom_page, name="console_sbom"),
            web.get(BUNDLE + "/sbom.json", sbom_views.sbom_download, name="console_sbom_download"),
            web.post(BUNDLE + "/sign", bundle_views.sign_bundle, name="console_bundle_sign"),
            web.post(BUNDLE + "/delete", bundle_views.delete_bundle, name="console_bundle_delete"),
            web.post(BUNDLE + "/distribute", distribution_views.distribute, name="console_distribute"),
            web.post(BUNDLE + "/undistribute", distribution_views.undistribute, name="console_undistribute"),
            web.post(BUNDLE + "/abort", distribution_views.abort, name="console_abort"),
            web.get(BUNDLE + "/distributions/{id}", distribution_views.distribution_page, name="console_distribution"),
            web.get(
                BUNDLE + "/distributions/{id}/events",
                distribution_views.distribution_events,
                name="console_distribution_events",
            ),
            web.get(UI + "/edges", edge_views.edge_list, name="console_edges"),
            web.post(UI + "/edges", edge_views.add_edge, name="console_edge_add"),
            web.post(UI + "/edges/{edge}/remove", edge_views.remove_edge, name="console_edge_remove"),
            web.get(UI + "/webhooks", webhook_views.webhook_list, name="console_webhooks"),
            web.post(UI + "/webhooks", webhook_views.add_webhook, name="console_webhook_add"),
            web.get(WEBHOOK, webhook_views.webhook_page, name="console_webhook"),
            web.post(WEBHOOK + "/enabled", webhook_views.set_enabled, name="console_webhook_enabled"),
            web.post(WEBHOOK + "/remove", webhook_views.remove_webhook, name="console_webhook_remove"),
            web.post(
                UI + "/webhooks/deliveries/{delivery}/redeliver", webhook_views.redeliver, name="console_redeliver"
            ),
            web.get(UI + "/keys", edge_views.key_list, name="console_keys"),
            web.post(UI + "/keys/propagate", edge_views.propagate_keys, name="console_keys_propagate"),
            web.get(UI + "/fleet", fleet_views.fleet_page, name="console_fleet"),
            web.get(UI + "/fleet/runtime", fleet_views.runtime_page, name="console_runtime"),
            web.get(UI + "/fleet/deployments/{id}", fleet_views.deployment_page, name="console_deployment"),
            web.post(UI + "/fleet/deployments/{id}/operate", fleet_views.operate, name="console_deployment_operate"),
            static_file(STATIC, "live.js", "text/javascript"),
        ]
    )
