"""Wiring a web console into a service's app: templates (the service's own first, then the shared
base ones), sessions in the node's database, the login and logout routes and the stylesheet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from repository.http.setup import database
from repository.settings import ServiceSettings

from . import auth, keys
from .sessions import SessionStore

UI = "/ui"
STATIC = Path(__file__).parent / "static"


def static_file(folder: Path, name: str, content_type: str) -> web.RouteDef:
    """One small file of a console (its CSS, a script), read once and answered from memory: the
    services' response writers send bytes themselves, not by the static handler's sendfile."""
    body = (folder / name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "max-age=300"})

    return web.get(f"{UI}/static/{name}", handler, name=f"console_static_{name.replace('.', '_')}")


def setup_console(
    app: web.Application,
    settings: ServiceSettings,
    service_name: str,
    template_package: str,
    sections: tuple[tuple[str, str], ...],
) -> None:
    """The shared part of a console at ``/ui/``; the service adds its pages' routes itself.
    ``sections`` are the header's links, (label, URL); the first is where ``/ui/`` leads."""
    loader = jinja2.ChoiceLoader(
        [jinja2.PackageLoader(template_package, "templates"), jinja2.PackageLoader("repository.console", "templates")]
    )
    # autoescape: every value a page shows (a bundle or a file named <script>...) renders as text
    aiohttp_jinja2.setup(app, loader=loader, autoescape=True)
    app[keys.secure_cookies] = (settings.console_public_url or "").startswith("https://")
    app[keys.sections] = sections
    app[keys.service_name] = service_name
    lifetime_ms = settings.console_session_hours * 3600 * 1000

    async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.sessions] = SessionStore(app[database], lifetime_ms)
        yield

    app.cleanup_ctx.append(sessions_ctx)
    home = sections[0][1]

    async def to_home(request: web.Request) -> web.Response:
        return auth.see_other(home)

    app.router.add_routes(
        [
            web.get(UI, to_home, name="console_root"),
            web.get(UI + "/", to_home, name="console_home"),
            web.get(auth.LOGIN, auth.login_page, name="console_login_page"),
            web.post(auth.LOGIN, auth.login, name="console_login"),
            web.post(UI + "/logout", auth.logout, name="console_logout"),
            static_file(STATIC, "console.css", "text/css"),
        ]
    )
