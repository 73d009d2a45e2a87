"""PUT and DELETE of artifacts, with Artifactory's checksum headers.

The node's policy is asked before the body is read, so a refused write answers
403 at once and never touches storage.
"""

from __future__ import annotations

import re

from aiohttp import web

from repository.errors import BadRequest, ChecksumMismatch, Forbidden, NotFound
from repository.paths import split_repo_path
from repository.permissions import Action
from repository.property_syntax import Properties, PropertySyntaxError, parse_matrix
from wire.errors import InvalidPath

from . import keys
from .auth import reader, require_permission
from .download import ARTIFACTORY_PREFIX, artifact_location, raw_tail
from .responses import json_response
from .storage_api import file_info, folder_info

BODY_CHUNK = 256 * 1024
_HEX_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}
# JFrog CLI sends a bare X-Checksum carrying the sha256.
_CHECKSUM_HEADERS = {
    "X-Checksum-Sha256": "sha256",
    "X-Checksum": "sha256",
    "X-Checksum-Sha1": "sha1",
    "X-Checksum-Md5": "md5",
}


def expected_checksums(request: web.Request) -> dict[str, str]:
    """The digests a client promised, validated as hex of the right length."""
    expected: dict[str, str] = {}
    for header, algorithm in _CHECKSUM_HEADERS.items():
        value = request.headers.get(header)
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTHS[algorithm]}}}", value):
            raise BadRequest(f"Invalid {header} header: expected {_HEX_LENGTHS[algorithm]} hex digits")
        if expected.get(algorithm, value) != value:  # no content can match both: a mismatch, like any other
            raise ChecksumMismatch("X-Checksum and X-Checksum-Sha256 disagree; nothing was stored")
        expected[algorithm] = value
    return expected


def deploy_location(request: web.Request) -> tuple[str, str, Properties | None]:
    """Repo, path and the properties of matrix parameters (``repo/file;a=1;b=2,3``), if any.

    As in Artifactory, a raw ``;`` starts the matrix parameters and an encoded one (``%3B``)
    is part of the name. They go after the last segment: ``a;x=1/b`` is refused.
    """
    raw = raw_tail(request, ARTIFACTORY_PREFIX)
    if ";" not in raw:
        return (*split_repo_path(raw), None)
    raw, _, matrix = raw.partition(";")
    if "/" in matrix:
        raise PropertySyntaxError("Matrix parameters (;key=value) must follow the last name of the path")
    if raw.endswith("/"):
        raise PropertySyntaxError("A folder holds no properties of its own: set them on its files")
    return (*split_repo_path(raw), parse_matrix(matrix))


async def deploy(request: web.Request) -> web.Response:
    repo, path, properties = deploy_location(request)
    request.app[keys.policy].check_writable(repo)
    principal = await require_permission(request, Action.write, repo, path)
    if not path:
        raise InvalidPath("Invalid path: a file path is required")
    service = request.app[keys.artifacts]
    if raw_tail(request, ARTIFACTORY_PREFIX).endswith("/"):
        folder = await service.make_folder(repo, path, principal.subject)
        return json_response(await folder_info(request, folder), status=201)
    expected = expected_checksums(request)
    checksum_deploy = request.headers.get("X-Checksum-Deploy", "false")
    if checksum_deploy not in ("true", "false"):
        raise BadRequest("X-Checksum-Deploy must be true or false")
    if checksum_deploy == "true":
        if "sha256" not in expected and "sha1" not in expected:  # names no known content, as an unknown one
            raise NotFound("X-Checksum-Deploy needs the X-Checksum-Sha256 or -Sha1 of known content; send the content")
        artifact = await service.deploy_by_checksum(
            repo, path, expected=expected, user=principal.subject, readable=reader(request), properties=properties
        )
    else:
        artifact = await service.deploy(
            repo,
            path,
            request.content.iter_chunked(BODY_CHUNK),
            expected=expected,
            declared_size=request.content_length,
            user=principal.subject,
            properties=properties,
        )
    return json_response(file_info(request, artifact), status=201)


async def delete(request: web.Request) -> web.Response:
    repo, path = artifact_location(request)
    request.app[keys.policy].check_writable(repo)
    await require_permission(request, Action.delete, repo, path)
    if not path:
        raise Forbidden("Deleting a whole repository is not supported here")
    await request.app[keys.artifacts].delete(repo, path)
    return web.Response(status=204)
