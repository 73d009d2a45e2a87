"""What the access pipeline learned about one request, shared by its steps and the audit trail.

The audit step creates it first (so even a request refused at the first step is recorded),
each later step fills in what it decided, and the audit record is written from it once the
response is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from aiohttp import web

IPAddress = IPv4Address | IPv6Address


@dataclass(slots=True)
class AccessContext:
    # the client as the rules see it: the peer, or the forwarded address a trusted proxy gave
    client_ip: IPAddress | None = None
    # ISO country code from the geo database, or None when unknown or geo is off
    country: str | None = None
    # the identity: a user or token subject, "anonymous", or the signed URL's issuer
    subject: str = "anonymous"
    token_id: str | None = None
    # a signed URL's key id and issue time, when the request carried one
    signed_kid: str | None = None
    signed_iat: int | None = None
    # the repo and path the request is about, when it is about one
    repo: str | None = None
    path: str | None = None
    # the rule that refused the request, e.g. "ip-deny 203.0.113.0/24 [releases-*]"
    denied_by: str | None = None
    # filled by the audit step: the status of the response once prepared, and the body
    # bytes handed to the kernel so far (sendfile included)
    status: int | None = None
    bytes_sent: int = 0

    def count_sent(self, sent: int, *_: object) -> None:
        """The response writer's ``on_body_write`` hook."""
        self.bytes_sent += sent


access_context = web.RequestKey("access_context", AccessContext)
