"""What a webhook subscription request may hold, checked before anything is stored.

A webhook is a request the service makes on someone's behalf, so its URL is held to more
than "a URL": http(s) only, no credentials in it (they would be shown in every listing),
and never this service itself, where a delivery would be a request to its own API.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from repository.errors import BadRequest
from wire.paths import CONTROL_RE

from .settings import DistributionSettings
from .webhook_events import EVENTS, EVERY_EVENT

MAX_URL = 2048
MIN_SECRET, MAX_SECRET = 16, 512
FIELDS = ("url", "events", "secret", "enabled")


@dataclass(frozen=True)
class SubscriptionRequest:
    url: str
    events: tuple[str, ...]
    secret: str
    secret_generated: bool


def parse_subscription(body: dict[str, Any], settings: DistributionSettings) -> SubscriptionRequest:
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; a webhook subscription has {', '.join(FIELDS)}")
    if body.get("enabled", True) is not True:
        raise BadRequest("'enabled' of a new subscription may only be true (disable it after with PATCH)")
    url = check_webhook_url(body.get("url"), settings)
    events = parse_events(body.get("events"))
    if "secret" not in body:
        return SubscriptionRequest(url, events, secrets.token_urlsafe(32), True)
    secret = body["secret"]
    if (
        not isinstance(secret, str)
        or not MIN_SECRET <= len(secret) <= MAX_SECRET
        or not secret.isascii()
        or not secret.isprintable()
        or secret != secret.strip()
    ):
        raise BadRequest(
            f"'secret' must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters without surrounding spaces"
        )
    return SubscriptionRequest(url, events, secret, False)


def parse_events(value: Any) -> tuple[str, ...]:
    """A list of event names, or ``*`` for all (alone or in the list); unknown names are refused."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"'events' must be a non-empty list of event names, or \"{EVERY_EVENT}\"")
    unknown = sorted(set(value) - set(EVENTS) - {EVERY_EVENT})
    if unknown:
        raise BadRequest(f"Unknown event '{unknown[0][:100]}'; events are {EVERY_EVENT}, {', '.join(EVENTS)}")
    if EVERY_EVENT in value:
        return (EVERY_EVENT,)
    return tuple(sorted(set(value), key=EVENTS.index))


def check_webhook_url(value: Any, settings: DistributionSettings) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("'url' is required: the http(s) URL deliveries are posted to")
    if len(value) > MAX_URL:
        raise BadRequest(f"'url' is {len(value)} characters long; at most {MAX_URL} are allowed")
    if CONTROL_RE.search(value) or any(ch.isspace() for ch in value):
        raise BadRequest("'url' may not hold spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"'url' must be an http or https URL with a host, not {value[:200]!r}")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("'url' may not carry credentials (user:password@); sign deliveries with the secret instead")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest(f"'url' has an invalid port: {value[:200]!r}") from None
    if parts.fragment:
        raise BadRequest("'url' may not have a #fragment")
    if _is_this_service(parts.hostname, port, settings):
        raise BadRequest(f"'url' points back at this service ({parts.hostname}:{port}); a webhook must go elsewhere")
    return value


def _is_this_service(host: str, port: int, settings: DistributionSettings) -> bool:
    """The service's own listen address and port, its configured public URL, or any loopback or
    local name of this machine with the service's port."""
    host = host.lower().rstrip(".")
    if settings.public_url:
        public = urlsplit(settings.public_url)
        public_port = public.port or (443 if public.scheme == "https" else 80)
        if (public.hostname or "").lower().rstrip(".") == host and public_port == port:
            return True
    if port != settings.port:
        return False
    if host in (settings.host.lower(), "localhost", socket.gethostname().lower()) or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified
