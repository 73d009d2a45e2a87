"""Signing in and out of the console, and what every page checks first: a live session, and on
every POST the session's CSRF token (missing or wrong: 403, nothing done).

Login accepts what the API accepts (an API token, or a user name with its password or token),
checked by the service's own ``Authenticator``. The login form itself is guarded by a
double-submit token (a cookie and a hidden field that must match), as there is no session yet.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from aiohttp import web
from multidict import MultiDictProxy

from repository.errors import Forbidden, Unauthorized
from repository.http import keys as core

from . import keys
from .pages import console_page, render
from .sessions import Session

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
HOME = "/ui/"
LOGIN = "/ui/login"


def see_other(location: str) -> web.Response:
    """Where the browser goes after a form (POST, redirect, GET)."""
    return web.Response(status=303, headers={"Location": location})


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        path="/ui/",
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.secure or request.app[keys.secure_cookies],
    )


async def current_session(request: web.Request) -> Session | None:
    """The request's live session, also made the request's principal so the API's own role checks
    (``require_role``, ``reader``) judge a console request exactly as an API call."""
    session_id = request.cookies.get(COOKIE)
    session = await request.app[keys.sessions].get(session_id) if session_id else None
    if session is not None:
        request[keys.session] = session
        request[core.principal] = session.principal
    return session


async def signed_in(request: web.Request) -> Session:
    """The live session; without one the browser is sent to the login page."""
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther(LOGIN)
    return session


def _same(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


async def posted(request: web.Request) -> MultiDictProxy[str]:
    """The form of a signed-in POST whose CSRF token is the session's; otherwise 403 (or login)."""
    session = await signed_in(request)
    form = await request.post()
    if not _same(form.get("csrf"), session.csrf):  # type: ignore[arg-type]
        raise Forbidden("The form's CSRF token is missing or wrong: reload the page and try again")
    return form  # type: ignore[return-value]


@console_page
async def login_page(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        return see_other(HOME)
    return _login_form(request)


def _login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "error": error}, status=status)
    _set_cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


@console_page
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not _same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):  # type: ignore[arg-type]
        raise Forbidden("The login form's CSRF token is missing or wrong: reload the page and try again")
    username, secret = str(form.get("username", "")).strip(), str(form.get("password") or form.get("token") or "")
    if not secret.strip():
        return _login_form(request, "Give an API token, or a user name and its password", 400)
    if username:
        headers = {"Authorization": "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()}
    else:
        headers = {"Authorization": "Bearer " + secret.strip()}
    try:
        principal = await request.app[core.authenticator].identify(headers)
    except Unauthorized:
        principal = None
    if principal is None or not principal.authenticated:
        return _login_form(request, "Bad credentials", 401)
    session_id, _ = await request.app[keys.sessions].open(principal)
    response = see_other(HOME)
    _set_cookie(request, response, COOKIE, session_id, request.app[keys.sessions].lifetime_ms // 1000)
    response.del_cookie(LOGIN_COOKIE, path="/ui/")
    return response


@console_page
async def logout(request: web.Request) -> web.StreamResponse:
    await posted(request)
    await request.app[keys.sessions].close(request.cookies[COOKIE])
    response = see_other(LOGIN)
    response.del_cookie(COOKIE, path="/ui/")
    return response
