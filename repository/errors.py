"""Domain errors that carry their HTTP status; one middleware turns them into responses.

They are ``WireError``s (the wire contract's base, which the contract's own errors share),
so the middleware maps every error with a status in one place.
"""

from __future__ import annotations

from wire.errors import WireError

# dohq-artifactory's exists() answers False only for these exact messages.
NOT_FOUND_MESSAGE = "Unable to find item"
EDGE_READ_ONLY_MESSAGE = "Deployment to an Edge Artifactory node is not supported."


class RepositoryError(WireError):
    """An error of the repository core or a service built on it."""


class BadRequest(RepositoryError):
    status = 400
    default_message = "Bad request"


class Unauthorized(RepositoryError):
    status = 401
    default_message = "Authentication is required"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Basic realm="Artifactory Realm"'})


class Forbidden(RepositoryError):
    status = 403
    default_message = "Forbidden"


class NotFound(RepositoryError):
    status = 404
    default_message = NOT_FOUND_MESSAGE


class MethodNotAllowed(RepositoryError):
    status = 405
    default_message = "Method not allowed"


class Conflict(RepositoryError):
    status = 409
    default_message = "Conflict"


class ChecksumMismatch(Conflict):
    """Artifactory answers a deploy whose bytes do not match its checksum headers with 409."""


class PathOwned(Conflict):
    """A direct upload or delete of a file another owner holds (a release bundle's file): its
    bytes change only with the bundle, so what an edge lists is what it serves."""


class PayloadTooLarge(RepositoryError):
    status = 413
    default_message = "Request body too large"


class RequestTimeout(RepositoryError, TimeoutError):
    """A request body that stopped arriving. A ``TimeoutError`` too, so that aiohttp, reading
    what is left of the body after the 408 went out, gives up and closes the connection."""

    status = 408
    default_message = "Request body timed out"


class RangeNotSatisfiable(RepositoryError):
    status = 416
    default_message = "Requested range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(headers={"Content-Range": f"bytes */{size}"})


class ServiceUnavailable(RepositoryError):
    status = 503
    default_message = "Storage is unavailable"
