"""The fleet's own URL-signing key: devices download with signed URLs the control plane mints,
and edges verify them with its public key, so no device ever holds an edge's credential.

The key is Ed25519, made on first start and kept as PEM (mode 0600) in the service's data
directory; every replica sharing that directory signs with it. Its ``kid`` is derived from
the public key (``fleet-`` and 16 hex digits), so the same key has the same id everywhere.

Tokens are in the edge's signed-URL format (``edge/access/signed_urls.py``): a compact JWT
with header ``{"alg":"EdDSA","kid","typ":"JWT"}`` and claims ``sub`` (the exact
``repo/path``), ``iss``, ``iat`` and ``exp`` (integer seconds). An edge opens a URL only
once it trusts the key: ``propagate`` posts it to each registered edge's trusted signed-URL
keys (``POST /artifactory/api/signed/keys``), which needs the edge registered with an
admin token; posting the same key again is a success, so it is safe to repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt import api_jws

from distribution.edges import Edge, EdgeStore
from transfer.client import EdgeCallError, EdgeClient

URL_KEYS = "/artifactory/api/signed/keys"
log = logging.getLogger(__name__)


class FleetUrlKey:
    def __init__(self, private: Ed25519PrivateKey, issuer: str) -> None:
        self._private = private
        self.issuer = issuer
        public = private.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = "fleet-" + hashlib.sha256(raw).hexdigest()[:16]
        self.public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @classmethod
    def load_or_create(cls, path: Path, issuer: str) -> FleetUrlKey:
        """The key in ``path``; made there (0600, written whole or not at all) when missing.
        Two processes starting at once agree: the second finds the first one's file."""
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                pem = path.read_bytes()
            finally:
                temp.unlink()
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(private, issuer)

    def mint(self, repo_path: str, issued: int, expires: int) -> str:
        """A signed-URL token that opens exactly ``repo_path`` (decoded, no leading slash) until ``expires``."""
        claims = {"sub": repo_path, "iss": self.issuer, "iat": issued, "exp": expires}
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
        return api_jws.encode(payload, self._private, algorithm="EdDSA", headers={"kid": self.kid})


async def propagate(
    session: aiohttp.ClientSession, key: FleetUrlKey, edges: list[Edge], read_timeout: float
) -> dict[str, Any]:
    """Trust the key on every edge at once: ``{"status": "SUCCESS"|"PARTIAL_SUCCESS"|"FAILURE",
    "kid", "details": [{"name","status","message"?}]}`` (no edges: SUCCESS, no details)."""

    async def trust(edge: Edge) -> dict[str, Any]:
        client = EdgeClient(session, edge, read_timeout=read_timeout)
        try:
            await client.call("POST", URL_KEYS, json_body={"kid": key.kid, "public_key": key.public_pem})
        except EdgeCallError as exc:
            message = exc.message
            if exc.status in (401, 403):
                message += "; trusting a key needs the edge registered with an admin token, not a distributor's"
            return {"name": edge.name, "status": "FAILURE", "message": message}
        return {"name": edge.name, "status": "SUCCESS"}

    details = list(await asyncio.gather(*(trust(e) for e in edges)))
    ok = sum(d["status"] == "SUCCESS" for d in details)
    status = "SUCCESS" if ok == len(details) else "FAILURE" if ok == 0 else "PARTIAL_SUCCESS"
    return {"status": status, "kid": key.kid, "details": details}


class UrlKeyPusher:
    """Trusts the fleet's URL key on every registered edge: on request, and in the background
    after a deployment is made (one push at a time; a failure is logged, and the next
    deployment or ``distribution fleet url-key propagate`` tries again)."""

    def __init__(self, session: aiohttp.ClientSession, key: FleetUrlKey, edges: EdgeStore, timeout: float) -> None:
        self._session = session
        self._key = key
        self._edges = edges
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None

    async def push(self) -> dict[str, Any]:
        return await propagate(self._session, self._key, await self._edges.list(), self._timeout)

    def soon(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._background(), name="fleet url key propagation")

    async def _background(self) -> None:
        for detail in (await self.push())["details"]:
            if detail["status"] != "SUCCESS":
                log.warning("edge %s does not trust the fleet's URL key: %s", detail["name"], detail["message"])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
