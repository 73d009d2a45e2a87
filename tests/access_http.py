"""HTTP as the access tests need it: any source address on loopback, raw paths, any headers.

``http.client`` sends the path exactly as given (no normalising of ``..`` or
percent-escapes) and can bind the client end to another loopback address
(127.0.0.2 is a peer the edge does not trust when only 127.0.0.1 is a proxy).
"""

from __future__ import annotations

import hashlib
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from devstack.services import EdgeProcess
from tests.gpg_keys import KeyFactory, TestKey
from wire.manifest import Manifest, ManifestArtifact, encode

TIMEOUT = 30
TX = "/artifactory/api/distribution/transactions"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The message of an Artifactory-style error body, checking its shape and status."""
        body = self.json()
        assert list(body) == ["errors"] and len(body["errors"]) == 1, body
        (err,) = body["errors"]
        assert err["status"] == self.status, body
        return str(err["message"])


def call(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    body: bytes | Any = None,
    source: str | None = None,
    token: str | None = None,
) -> Answer:
    """One request to ``url`` (``http://127.0.0.1:port/raw/path?query``), sent as written."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def push_bundle(
    edge: EdgeProcess, key_factory: KeyFactory, key: TestKey, name: str, version: str, files: dict[str, bytes]
) -> None:
    """What the Distribution service does: trust (once), then start, upload what is missing, commit.

    ``files`` maps target paths (``releases-local/app/1.4.0/app.tar.gz``) to their bytes.
    """
    admin = edge.admin_token
    trusted = call(
        edge.url + "/artifactory/api/security/keys/trusted",
        "POST",
        body={"alias": "dist", "public_key": key.public},
        token=admin,
    )
    assert trusted.status in (200, 201), trusted.body
    artifacts = [
        ManifestArtifact(
            target=target,
            source=f"src-local/{target}",
            size=len(data),
            sha256=sha256(data),
            sha1=hashlib.sha1(data).hexdigest(),
            md5=hashlib.md5(data).hexdigest(),
        )
        for target, data in files.items()
    ]
    manifest = encode(Manifest.create(name, version, artifacts, created_by="release-manager"))
    signature = key_factory.sign(key, manifest).decode()
    started = call(edge.url + TX, "POST", body={"manifest": manifest.decode(), "signature": signature}, token=admin)
    assert started.status == 201, started.body
    tx = started.json()["transaction_id"]
    by_sha = {sha256(d): d for d in files.values()}
    for missing in started.json()["missing"]:
        sent = call(f"{edge.url}{TX}/{tx}/blobs/{missing}", "PUT", body=by_sha[missing], token=admin)
        assert sent.status in (200, 201), sent.body
    committed = call(f"{edge.url}{TX}/{tx}/commit", "POST", token=admin)
    assert committed.status == 200, committed.body
