"""The edge node's app factory: nothing is built or read at import time."""

from __future__ import annotations

from aiohttp import web

from repository.http.middlewares import error_middleware, identity_middleware
from repository.http.setup import setup_artifact_core
from repository.policy import edge_policy

from . import __version__
from .keys import settings_key
from .routes import setup_routes
from .settings import EdgeSettings

# JSON bodies on an edge are small (tokens, later rules); artifact bodies stream.
MAX_JSON_BODY = 1024 * 1024


def create_app(settings: EdgeSettings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, identity_middleware],
        client_max_size=MAX_JSON_BODY,
    )
    app[settings_key] = settings
    setup_artifact_core(
        app,
        database_path=settings.database_path,
        backend=settings.storage.backend,
        backend_params=settings.storage.backend_params(settings.data_dir),
        policy=edge_policy(
            node_id=settings.node_id,
            version=__version__,
            max_upload_bytes=settings.max_upload_bytes,
            redirect_downloads=settings.storage.redirect_downloads,
            presign_expiry=settings.storage.presign_expiry,
            uploads_anonymous_read=settings.uploads_anonymous_read,
        ),
        admin_token=settings.admin_token,
    )
    setup_routes(app)
    return app
