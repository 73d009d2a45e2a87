"""A small REST client for the CLIs: every command other than ``serve`` goes over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import click


def call(base_url: str, token: str | None, method: str, path: str, body: Any = None, **params: str) -> Any:
    """Make one call and answer its JSON (or text); a 4xx/5xx becomes a CLI error with the server's message."""
    return asyncio.run(_call(base_url.rstrip("/"), token, method, path, body, params))


async def _call(base_url: str, token: str | None, method: str, path: str, body: Any, params: dict[str, str]) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=300)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, base_url + path, json=body, headers=headers, params=params) as resp,
        ):
            text = await resp.text()
            if resp.status >= 400:
                raise click.ClickException(f"{resp.status}: {_message(text)}")
            return json.loads(text) if text and resp.content_type == "application/json" else text
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach {base_url}: {exc}") from None


def download(base_url: str, token: str | None, path: str) -> tuple[bytes, dict[str, str]]:
    """GET the exact bytes at ``path`` (a document to keep as it was served) and the headers; a
    4xx/5xx becomes a CLI error with the server's message, as ``call``'s do."""
    return asyncio.run(_download(base_url.rstrip("/"), token, path))


async def _download(base_url: str, token: str | None, path: str) -> tuple[bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session,
            session.get(base_url + path, headers=headers) as resp,
        ):
            data = await resp.read()
            if resp.status >= 400:
                raise click.ClickException(f"{resp.status}: {_message(data.decode('utf-8', 'replace'))}")
            return data, dict(resp.headers)
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach {base_url}: {exc}") from None


def _message(text: str) -> str:
    """The message of either error shape: Artifactory's ``errors`` list or Distribution's flat body."""
    try:
        body = json.loads(text)
        if "errors" in body:
            return "; ".join(e["message"] for e in body["errors"])
        return str(body["message"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or "no details"
