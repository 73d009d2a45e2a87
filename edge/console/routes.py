"""The edge console: the shared part (login, sessions, stylesheet) and the edge's own pages."""

from __future__ import annotations

from aiohttp import web

from repository.console.setup import UI, setup_console

from ..settings import EdgeSettings
from . import views

SECTIONS = (
    ("Repos", UI + "/repos"),
    ("Audit", UI + "/audit"),
    ("Rules", UI + "/rules"),
    ("Signed URLs", UI + "/signed-url"),
)


def setup_edge_console(app: web.Application, settings: EdgeSettings) -> None:
    setup_console(app, settings, f"Edge {settings.node_id}", "edge.console", SECTIONS)
    app.router.add_routes(
        [
            web.get(UI + "/repos", views.repos_page, name="console_repos"),
            web.get(views.BROWSE + "{tail:[\\s\\S]+}", views.browse_page, name="console_browse"),
            web.get(UI + "/audit", views.audit_page, name="console_audit"),
            web.get(UI + "/audit/export", views.audit_export, name="console_audit_export"),
            web.get(UI + "/rules", views.rules_page, name="console_rules"),
            web.get(UI + "/signed-url", views.signed_url_page, name="console_signed_url"),
            web.post(UI + "/signed-url", views.create_signed_url, name="console_signed_url_create"),
        ]
    )
