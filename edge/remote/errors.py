"""What can go wrong between a remote repo and its upstream, each with the status a client gets."""

from __future__ import annotations

from repository.errors import NotFound, RepositoryError


class UpstreamMissing(NotFound):
    """The upstream answered 404 (remembered for ``missedRetrievalCachePeriodSecs``)."""


class UpstreamFailed(RepositoryError):
    """The upstream could not be reached, answered an error, or sent bytes that are not what it said."""

    status = 502
    default_message = "The remote repository's upstream failed"


class UpstreamTimeout(RepositoryError):
    """The upstream did not connect, send, or finish within its deadlines."""

    status = 504
    default_message = "The remote repository's upstream did not answer in time"


class LoopDetected(RepositoryError):
    """A request came back to a node it already passed through: a chain of remotes is a circle."""

    status = 508
    default_message = "Loop detected: this request already passed through this node"
