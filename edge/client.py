"""A small REST client for the edge CLI: every command other than ``serve`` goes over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import click


def call(base_url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    """Make one call and answer its JSON; a 4xx/5xx becomes a CLI error with the server's message."""
    return asyncio.run(_call(base_url.rstrip("/"), token, method, path, body))


async def _call(base_url: str, token: str | None, method: str, path: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, base_url + path, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            if resp.status >= 400:
                raise click.ClickException(f"{resp.status}: {_message(text)}")
            return json.loads(text) if text and resp.content_type == "application/json" else text
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach {base_url}: {exc}") from None


def _message(text: str) -> str:
    try:
        return "; ".join(e["message"] for e in json.loads(text)["errors"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or "no details"
