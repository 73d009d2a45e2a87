"""Handlers of ``/distribution/api/v1/webhooks``: subscriptions, their delivery log, redelivery.

Admin only, reads included: a subscription's URL can say more than its owner wants known.
The secret is answered once, when the subscription is made.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from repository.errors import BadRequest, NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role

from .keys import settings_key, webhooks_key
from .webhook_requests import SubscriptionRequest, parse_subscription
from .webhook_store import DELIVERY_PAGE, Delivery, Subscription, WebhookStore

MAX_ID_DIGITS = 18


def webhook_store(request: web.Request) -> WebhookStore:
    return request.app[webhooks_key].store


def path_id(request: web.Request, key: str, what: str) -> int:
    raw = request.match_info[key]
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_ID_DIGITS:
        raise NotFound(f"No {what} {raw[:40]!r}")
    return int(raw)


async def subscribe(request: web.Request, body: dict[str, Any], user: str) -> tuple[Subscription, SubscriptionRequest]:
    """Store the subscription ``body`` asks for (the API's and the console's add); the request
    holds the secret, which the caller shows this once."""
    settings = request.app[settings_key]
    asked = parse_subscription(body, settings)
    sub = await webhook_store(request).add(
        asked.url, asked.events, asked.secret, user, settings.webhook_max_subscriptions
    )
    return sub, asked


async def set_enabled(request: web.Request, sub_id: int, enabled: bool) -> Subscription:
    """Turn deliveries off and on; queued ones wait meanwhile."""
    sub = await webhook_store(request).set_enabled(sub_id, enabled, "disabled by an administrator")
    request.app[webhooks_key].wake()
    return sub


async def send_again(request: web.Request, delivery_id: int) -> Delivery:
    """Queue a delivery's event again, at the end of its subscription's queue."""
    delivery = await webhook_store(request).redeliver(delivery_id)
    request.app[webhooks_key].wake()
    return delivery


async def add_webhook(request: web.Request) -> web.Response:
    user = require_role(request, Role.admin).subject
    sub, asked = await subscribe(request, await read_json_object(request), user)
    shown_once = {"secret": asked.secret, "secret_generated": asked.secret_generated}
    return json_response(sub.as_json() | shown_once, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return json_response([s.as_json() for s in await webhook_store(request).subscriptions()])


async def get_webhook(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    return json_response((await webhook_store(request).get(path_id(request, "id", "webhook subscription"))).as_json())


async def update_webhook(request: web.Request) -> web.Response:
    """``{"enabled": true|false}``: turn deliveries off and on; queued ones wait meanwhile."""
    require_role(request, Role.admin)
    sub_id = path_id(request, "id", "webhook subscription")
    body: dict[str, Any] = await read_json_object(request)
    if set(body) != {"enabled"} or not isinstance(body["enabled"], bool):
        raise BadRequest('A webhook subscription\'s update is {"enabled": true|false}')
    return json_response((await set_enabled(request, sub_id, body["enabled"])).as_json())


async def remove_webhook(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await webhook_store(request).remove(path_id(request, "id", "webhook subscription"))
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    """The delivery log of a subscription, newest first, ``DELIVERY_PAGE`` a page (``?start_pos=``)."""
    require_role(request, Role.admin)
    sub_id = path_id(request, "id", "webhook subscription")
    raw = request.query.get("start_pos", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise BadRequest("'start_pos' must be a non-negative integer")
    start = int(raw)
    deliveries, total = await webhook_store(request).deliveries(sub_id, start)
    headers = {
        "X-RangeLimit-StartPos": str(start),
        "X-RangeLimit-EndPos": str(start + len(deliveries)),
        "X-RangeLimit-Total": str(total),
        "X-RangeLimit-PageSize": str(DELIVERY_PAGE),
    }
    return json_response([d.as_json() for d in deliveries], headers=headers)


async def redeliver(request: web.Request) -> web.Response:
    """Send a delivery's event again: queued at the end of its subscription's queue."""
    require_role(request, Role.admin)
    delivery = await send_again(request, path_id(request, "id", "webhook delivery"))
    return json_response(delivery.as_json(), status=202)
