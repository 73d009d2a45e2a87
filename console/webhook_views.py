"""Console pages of webhook subscriptions (admins only, reads included, as on the API): list, add
(the secret shown once), enable and disable, remove, and one subscription's delivery log with
redelivery, through the same functions and store as ``distribution/webhooks_api.py``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from distribution import webhooks_api
from distribution.webhook_events import EVENTS, EVERY_EVENT
from distribution.webhook_store import DELIVERY_PAGE
from repository.console.auth import posted, see_other, signed_in
from repository.console.pages import console_page, render
from repository.errors import BadRequest
from repository.http.auth import require_role
from repository.tokens import Role
from wire.errors import WireError
from wire.timestamps import iso

LIST = "/ui/webhooks"


def webhook_url(sub_id: int) -> str:
    return f"{LIST}/{sub_id}"


def _sub_id(request: web.Request) -> int:
    return webhooks_api.path_id(request, "id", "webhook subscription")


async def _list_page(request: web.Request, extra: dict[str, Any], status: int = 200) -> web.Response:
    subs = await webhooks_api.webhook_store(request).subscriptions()
    context = {"subs": subs, "events": EVENTS, "every": EVERY_EVENT, "form": {}, "url_of": webhook_url, "iso": iso}
    return render(request, "webhooks.html", context | extra, status=status)


@console_page
async def webhook_list(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, Role.admin)
    return await _list_page(request, {})


@console_page
async def add_webhook(request: web.Request) -> web.StreamResponse:
    """The form as the API's body; the new subscription's secret is on the answer, this once."""
    form = await posted(request)
    user = require_role(request, Role.admin).subject
    body: dict[str, Any] = {"url": form.get("url", "").strip(), "events": form.getall("events", [])}
    if secret := form.get("secret", ""):
        body["secret"] = secret
    try:
        sub, asked = await webhooks_api.subscribe(request, body, user)
    except WireError as exc:  # the form again, with what is wrong; nothing stored
        return await _list_page(request, {"form": form, "error": exc.message}, exc.status)
    return await _list_page(request, {"created": sub, "secret": asked.secret}, 201)


@console_page
async def webhook_page(request: web.Request) -> web.StreamResponse:
    """A subscription and its delivery log, newest first, ``DELIVERY_PAGE`` a page."""
    await signed_in(request)
    require_role(request, Role.admin)
    sub_id = _sub_id(request)
    store = webhooks_api.webhook_store(request)
    sub = await store.get(sub_id)
    raw = request.query.get("start", "0")
    start = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0
    deliveries, total = await store.deliveries(sub_id, start)
    context = {"sub": sub, "deliveries": deliveries, "total": total, "start": start, "page_size": DELIVERY_PAGE}
    return render(request, "webhook.html", context | {"url": webhook_url(sub_id), "iso": iso})


@console_page
async def set_enabled(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, Role.admin)
    sub_id = _sub_id(request)
    enabled = form.get("enabled")
    if enabled not in ("true", "false"):
        raise BadRequest("'enabled' is true or false")
    await webhooks_api.set_enabled(request, sub_id, enabled == "true")
    return see_other(webhook_url(sub_id))


@console_page
async def remove_webhook(request: web.Request) -> web.StreamResponse:
    await posted(request)
    require_role(request, Role.admin)
    await webhooks_api.webhook_store(request).remove(_sub_id(request))
    return see_other(LIST)


@console_page
async def redeliver(request: web.Request) -> web.StreamResponse:
    """Queue a delivery's event again; back to its subscription's log, where the new one shows."""
    await posted(request)
    require_role(request, Role.admin)
    delivery = await webhooks_api.send_again(request, webhooks_api.path_id(request, "delivery", "webhook delivery"))
    return see_other(webhook_url(delivery.subscription_id))
