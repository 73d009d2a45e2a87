"""The edge's route table. Transactions, signed URLs and audit join it in later work."""

from __future__ import annotations

from aiohttp import web

from repository.http.routes import artifact_routes


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(artifact_routes())
