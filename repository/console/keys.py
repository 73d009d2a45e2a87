"""Typed app and request keys of a web console."""

from __future__ import annotations

from aiohttp import web

from .sessions import Session, SessionStore

sessions = web.AppKey("console_sessions", SessionStore)
# whether cookies must be Secure whatever the request's scheme (the public URL is https)
secure_cookies = web.AppKey("console_secure_cookies", bool)
# the console's sections, (label, URL) in the order its header shows them; the first is home
sections = web.AppKey("console_sections", tuple)
# the service's name in every page's header and title
service_name = web.AppKey("console_service_name", str)

# Request-scoped: the signed-in session of a console page.
session = web.RequestKey("console_session", Session)
