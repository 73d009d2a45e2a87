"""GET/HEAD of an artifact: headers clients rely on, then the fastest path for the bytes.

Everything that can fail (lookup, stat, range, preconditions) is decided before
``prepare()``, so errors are still clean JSON 404/412/416s. The bytes then go by
a presigned redirect, by nginx (``X-Accel-Redirect``, when the node is configured
for it and the nginx in front asks for it), by sendfile from a local file, or
streamed from the backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable
from contextlib import aclosing
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict, CIMultiDictProxy

from repository.catalog import Artifact, Repo
from repository.errors import NotFound, RepositoryError
from repository.paths import split_repo_path
from repository.quarantine import BlobQuarantined
from repository.remote_source import REMOTE
from repository.sendfile import send_file
from repository.virtual import VIRTUAL, VirtualRepo
from storage_backends import BlobNotFound, StorageBackend, content_disposition, open_in_thread

from . import keys
from .auth import cached_read, require_read
from .folder_page import folder_page, wants_html
from .lookup import load_artifact
from .one_write import OneWriteResponse, head_block, sendable_in_one_write
from .ranges import ByteRange, not_modified, other_servers_agree, parse_range, precondition_failed, range_applies
from .virtual_resolve import members, virtual_repo

log = logging.getLogger(__name__)

ARTIFACTORY_PREFIX = "/artifactory/"
SMALL_BODY = 64 * 1024  # up to this, blobs are served from memory rather than by sendfile
# nginx says it can send files by X-Accel-Redirect with this request header (what nginx/edge.conf
# sets), so an edge reached any other way still sends the bytes itself.
ACCEL_REQUEST_HEADER = "X-Sendfile-Type"
ACCEL_REQUEST_VALUE = "x-accel-redirect"
# nginx judges these again on the file it sends, against the blob file's own mtime and not
# the artifact's: a request carrying one gets its bytes from the edge. If-Range is fine: nginx
# reads it against the edge's ETag and Last-Modified that nginx/edge.conf carries over.
CONDITIONAL_HEADERS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


# An artifact's response headers; handlers copy them before adding any.
Headers = CIMultiDict[str]


class PreconditionFailed(RepositoryError):
    status = 412
    default_message = "Precondition failed"


def raw_tail(request: web.Request, prefix: str) -> str:
    """The still-percent-encoded part of the request path after ``prefix``."""
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith(prefix):
        raise NotFound()
    return raw[len(prefix) :]


def artifact_location(request: web.Request, prefix: str = ARTIFACTORY_PREFIX) -> tuple[str, str]:
    repo, path = split_repo_path(raw_tail(request, prefix))
    return repo, path


def modified_at(artifact: Artifact) -> datetime:
    return datetime.fromtimestamp(artifact.modified / 1000, tz=UTC)


def served_headers(artifact: Artifact, node_id: str) -> tuple[Headers, datetime, ByteRange]:
    """The headers every answer with this artifact's bytes carries, Last-Modified included, its
    modification time and its whole extent: worked out once per entry the catalog keeps cached,
    not per request. Never changed by a caller (a range copies the headers first)."""
    key = ("download", node_id)
    found: tuple[Headers, datetime, ByteRange] | None = artifact.derived.get(key)
    if found is None:
        modified = modified_at(artifact)
        headers = artifact_headers(artifact, node_id)
        headers["Last-Modified"] = _http_date(modified)
        # a response copies a CIMultiDict faster than it builds one from a dict
        found = artifact.derived[key] = (CIMultiDict(headers), modified, ByteRange(0, artifact.size))
    return found


def whole_file_head(artifact: Artifact, node_id: str, headers: Headers) -> bytes:
    """``headers`` (the file's ``served_headers``) and its Content-Length as the header lines of a
    ``OneWriteResponse``: serialized once per entry the catalog keeps cached."""
    key = ("one write", node_id)
    head: bytes | None = artifact.derived.get(key)
    if head is None:
        head = artifact.derived[key] = head_block(headers, artifact.size)
    return head


def artifact_headers(artifact: Artifact, node_id: str) -> dict[str, str]:
    name = artifact.name
    return {
        "Content-Type": artifact.mime_type,
        "ETag": f'"{artifact.sha256}"',
        "Accept-Ranges": "bytes",
        "X-Checksum-Sha1": artifact.sha1,
        "X-Checksum-Sha256": artifact.sha256,
        "X-Checksum-Md5": artifact.md5,
        "X-Artifactory-Filename": quote(name),
        "X-Artifactory-Id": node_id,
        "Content-Disposition": content_disposition(name),
    }


class SendfileResponse(web.StreamResponse):
    """A window of an open file sent with sendfile(2) (``send_file``): the kernel copies, not Python.

    The bytes the kernel took are reported to the writer's ``on_body_write`` like any
    other body bytes, also when the client goes away part way (the file position
    says how far sendfile got).
    """

    def __init__(self, fobj: IO[bytes], window: ByteRange, *, status: int, headers: Headers) -> None:
        super().__init__(status=status, headers=headers)
        self._fobj = fobj
        self._window = window
        self.content_length = window.length

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # already sent (or failed): never send twice
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if writer is None or request.method == "HEAD" or self._window.length == 0:
                return writer
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("client went away")
            try:
                await send_file(transport, self._fobj, self._window.start, self._window.length)
            finally:
                _report_sent(writer, max(0, self._fobj.tell() - self._window.start))
            await super().write_eof()
            return writer
        finally:
            self._fobj.close()  # a read-only close does no I/O worth a thread hop


def _report_sent(writer: AbstractStreamWriter, sent: int) -> None:
    writer.output_size += sent  # the kernel sent it; count it for logs
    if sent > 0 and (notify := writer.on_body_write) is not None:
        notify(sent, writer.output_size)


async def download(request: web.Request) -> web.StreamResponse:
    repo, path = artifact_location(request)
    found = cached_read(request, repo, path) or await require_read(request, repo, path)
    virtual = virtual_repo(request, repo) if found.type == VIRTUAL else None
    try:
        if virtual is None:
            return await serve_download(request, found, path)
        return await _serve_virtual(request, virtual, path)
    except NotFound:
        if not wants_html(request):  # API clients keep the JSON 404 of a folder
            raise
        return await folder_page(request, repo, path)


async def _serve_virtual(request: web.Request, virtual: VirtualRepo, path: str) -> web.StreamResponse:
    """The first member's answer for ``path``, each member asked as a request naming it would be
    (so a remote member fetches on a miss); the member is left on the request for the audit."""
    for member in await members(request, virtual, path):
        request[keys.served_from] = member.key
        try:
            return await serve_download(request, member, path)
        except NotFound:
            continue
    request.pop(keys.served_from, None)
    raise NotFound()


def serve_download(request: web.Request, repo: Repo, path: str) -> Awaitable[web.StreamResponse]:
    """GET/HEAD of ``path`` in ``repo``, whose read the caller has checked: what a request naming
    the repo answers, for every kind of repo (a remote one fetches a file it lacks from its
    upstream), and so what a virtual repo answers for each of its members. Not a coroutine of its
    own: it picks the one to await, which saves every download a layer."""
    if repo.type == REMOTE and (remote := request.app.get(keys.remote_repos)) is not None:
        return remote.serve(request, repo, path)
    return serve_stored(request, repo.key, path)


async def serve_stored(request: web.Request, repo: str, path: str) -> web.StreamResponse:
    """The download of a file the node's catalog holds (404 when it holds none at ``path``)."""
    app = request.app
    artifact = app[keys.artifacts].servable_from_memory(repo, path)  # the usual case: no coroutine
    if artifact is None:
        artifact = await load_artifact(request, repo, path)
    policy = app[keys.policy]
    headers, modified, window = served_headers(artifact, policy.node_id)

    status, delegable = 200, True
    if _conditional(request.headers):  # most downloads carry neither a condition nor a range
        if precondition_failed(request, artifact.sha256, modified):
            raise PreconditionFailed()
        if not_modified(request, artifact.sha256, modified):
            return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
        if range_applies(request, artifact.sha256, modified):
            window = parse_range(request.headers["Range"], artifact.size)
            status = 206
            headers = headers.copy()
            headers["Content-Range"] = window.content_range(artifact.size)
            delegable = other_servers_agree(request.headers["Range"])

    if request.method == "HEAD":
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = window.length
        return response
    redirects = policy.redirect_downloads and app[keys.storage].presigns
    if not (delegable and (redirects or _nginx_sends(request, policy.accel_redirect))):
        body = app[keys.small_blobs].get(artifact.sha256)
        if body is not None:  # the usual small download: answered without another coroutine
            return _from_memory(request, artifact, body, window, status, headers)
    return await _body(request, artifact, window, status, headers, delegable=delegable)


async def _body(
    request: web.Request,
    artifact: Artifact,
    window: ByteRange,
    status: int,
    headers: Headers,
    *,
    delegable: bool,
) -> web.StreamResponse:
    """``delegable``: S3 or nginx, handed the request's Range, would answer it alike; else the
    edge sends the bytes itself."""
    storage = request.app[keys.storage]
    policy = request.app[keys.policy]
    if policy.redirect_downloads and delegable:
        url = await storage.presigned_url(
            artifact.sha256,
            expires_in=policy.presign_expiry,
            filename=artifact.name,
            content_type=artifact.mime_type,
        )
        if url is not None:
            redirect = {k: v for k, v in headers.items() if k.startswith("X-")}
            raise web.HTTPFound(url, headers=redirect)
    by_nginx = delegable and _nginx_sends(request, policy.accel_redirect)
    small = request.app[keys.small_blobs]
    body: bytes | None = None if by_nginx else small.get(artifact.sha256)
    if body is not None:
        return _from_memory(request, artifact, body, window, status, headers)
    path = await storage.local_path(artifact.sha256)
    if path is not None and by_nginx:
        return _accel_redirect(policy.accel_redirect, path, status, headers)
    if artifact.size <= SMALL_BODY:
        # Small blobs are kept in memory once read whole and checked, from local disk or from S3
        # (where each read is a round trip that costs the edge more than the download itself).
        if path is not None:
            body = await asyncio.to_thread(_read_checked, path, artifact.sha256)
        else:
            body = await _fetch_checked(storage, artifact.sha256)
        if body is None:  # the bytes at rest do not match: never served, taken out of service now
            reason = "sha256 mismatch found when served"
            await request.app[keys.artifacts].quarantine(artifact.sha256, artifact.size, reason)
            raise BlobQuarantined(f"{artifact.repo}/{artifact.path}", reason)
        small[artifact.sha256] = body  # content-addressed, and checked: never stale
        return _from_memory(request, artifact, body, window, status, headers)
    if path is not None:
        fobj = await open_in_thread(_open, path, artifact.sha256)
        return SendfileResponse(fobj, window, status=status, headers=headers)
    chunks = await storage.read(artifact.sha256, window.start, window.length)
    async with aclosing(chunks):  # a client that goes away frees the backend's connection at once
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = window.length
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    return response


def _conditional(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the request carries a precondition or a range, which the download must judge."""
    return (
        "Range" in headers
        or "If-Match" in headers
        or "If-None-Match" in headers
        or "If-Modified-Since" in headers
        or "If-Unmodified-Since" in headers
    )


def _from_memory(
    request: web.Request, artifact: Artifact, body: bytes, window: ByteRange, status: int, headers: Headers
) -> web.StreamResponse:
    if status == 200 and sendable_in_one_write(request):  # a 200 is the whole file
        return OneWriteResponse(whole_file_head(artifact, request.app[keys.policy].node_id, headers), body)
    if window.length != len(body):
        body = body[window.start : window.start + window.length]
    return web.Response(body=body, status=status, headers=headers)


def _nginx_sends(request: web.Request, prefix: str) -> bool:
    """Whether nginx should send this file: the node has a location for it, the nginx in front
    asked for X-Accel-Redirect, and the request carries no condition nginx would judge again."""
    if not prefix or request.headers.get(ACCEL_REQUEST_HEADER, "").strip().lower() != ACCEL_REQUEST_VALUE:
        return False
    return not any(name in request.headers for name in CONDITIONAL_HEADERS)


def _accel_redirect(prefix: str, path: Path, status: int, headers: Headers) -> web.Response:
    """The status and headers decided here, no body, and where nginx finds the file.

    nginx replaces the status, applies Range (the edge has already refused what it
    would not serve), and sends the blob from the local store's shard path
    ``ab/<sha256>`` under the location ``prefix``, which aliases the blob directory.
    The audit records the decision with 0 bytes: nginx sends them, and its log counts them.
    """
    shard = "/".join(path.parts[-2:])
    answer = headers.copy()
    answer["X-Accel-Redirect"] = prefix + shard
    if status == 200:  # nginx announces Accept-Ranges on the 200s it sends: carried over, it would be there twice
        del answer["Accept-Ranges"]
    return web.Response(status=status, headers=answer)


def _open(path: Path, sha256: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        log.error("index points at blob %s, which is not in storage", sha256)
        raise BlobNotFound(sha256) from None


async def _fetch_checked(storage: StorageBackend, sha256: str) -> bytes | None:
    """A small blob's bytes from a store with no local path; None when they do not hash to ``sha256``."""
    chunks = await storage.read(sha256)
    async with aclosing(chunks):
        body = b"".join([chunk async for chunk in chunks])
    return body if hashlib.sha256(body).hexdigest() == sha256 else None


def _read_checked(path: Path, sha256: str) -> bytes | None:
    """Open, read, close and hash in one thread hop (for small bodies that beats sendfile's setup,
    and the hash costs less than the hop); None when the bytes do not hash to ``sha256``."""
    with _open(path, sha256) as f:
        body = f.read()
    return body if hashlib.sha256(body).hexdigest() == sha256 else None


def _http_date(ts: datetime) -> str:
    return format_datetime(ts, usegmt=True)
