"""Each service's OpenAPI document, written by hand as YAML in ``repository/openapi/`` and served as JSON.

The documents ship inside the package (they are package data), so an installed service
serves them as well as a checkout does. Each is read and converted once, off the event
loop, on its first request.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

DOCUMENTS = Path(__file__).resolve().parent.parent / "openapi"
SERVICES = ("edge", "distribution")


def document_path(service: str) -> Path:
    if service not in SERVICES:
        raise ValueError(f"no OpenAPI document for {service!r}; expected one of {', '.join(SERVICES)}")
    return DOCUMENTS / f"{service}.yaml"


def load_document(service: str) -> dict[str, Any]:
    """The document as a JSON-ready dict (YAML anchors and merge keys resolved)."""
    with open(document_path(service), encoding="utf-8") as f:
        # libyaml's parser when PyYAML has it: the same document, some ten times faster
        document = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(document, dict):
        raise ValueError(f"{document_path(service)} is not an OpenAPI document")
    return document


@functools.cache
def document_json(service: str) -> bytes:
    return json.dumps(load_document(service), separators=(",", ":")).encode() + b"\n"


def openapi_handler(service: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering ``service``'s document; public, like ping."""
    document_path(service)  # an unknown service fails when the route table is built

    async def openapi(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(document_json, service)
        return web.Response(body=body, content_type="application/json")

    return openapi
