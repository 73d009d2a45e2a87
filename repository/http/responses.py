"""JSON answers end with a newline, so a shell prompt after ``curl`` starts on its own line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


def _dumps(data: Any) -> str:
    return json.dumps(data) + "\n"


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)
