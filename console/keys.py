"""Typed app and request keys of the console."""

from __future__ import annotations

from aiohttp import web

from .sessions import Session, SessionStore

sessions = web.AppKey("console_sessions", SessionStore)
# whether cookies must be Secure whatever the request's scheme (the public URL is https)
secure_cookies = web.AppKey("console_secure_cookies", bool)

# Request-scoped: the signed-in session of a console page.
session = web.RequestKey("console_session", Session)
