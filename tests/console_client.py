"""Driving the console with a plain HTTP client, as a browser's forms do (for the in-process tests)."""

from __future__ import annotations

import re
from typing import Any

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def log_in(client: Any, **fields: str) -> Any:
    """Log in with the login form (its own CSRF token included); answers the final response."""
    page = await client.get("/ui/login")
    return await client.post("/ui/login", data={"csrf": csrf_of(await page.text()), **fields})


async def form_post(client: Any, page_url: str, action: str, /, **fields: str) -> Any:
    """POST ``fields`` to ``action`` with the CSRF token ``page_url``'s forms carry."""
    page = await client.get(page_url)
    return await client.post(action, data={"csrf": csrf_of(await page.text()), **fields}, allow_redirects=False)


async def reader_token(client: Any, admin_token: str) -> str:
    """A token with the reader role, issued by an admin through the API."""
    body = {"username": "rita", "scope": "reader"}
    resp = await client.post("/access/api/v1/tokens", json=body, headers={"Authorization": f"Bearer {admin_token}"})
    assert resp.status in (200, 201), await resp.text()
    return str((await resp.json())["access_token"])
