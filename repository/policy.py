"""What a node lets clients do with its repos: one implementation, two policies.

An edge accepts writes only in its uploads repo; the distribution service hosts
writable source repos. Handlers ask the policy and never know which node they run in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import __version__
from .catalog import Repo
from .errors import EDGE_READ_ONLY_MESSAGE, Forbidden
from .settings import ServiceSettings

EDGE_UPLOADS_REPO = "artifactory-edge-uploads"


@dataclass(frozen=True)
class ArtifactPolicy:
    node_id: str
    version: str
    max_upload_bytes: int
    # None: every repo is writable; otherwise only these keys are.
    writable_repos: frozenset[str] | None = None
    read_only_message: str = EDGE_READ_ONLY_MESSAGE
    # Send clients to a presigned URL where the backend offers one (else stream).
    redirect_downloads: bool = True
    presign_expiry: int = 300
    # nginx's internal location for local blobs (X-Accel-Redirect); "" sends them from here.
    accel_redirect: str = ""
    # Repos that exist on this node from the start; their settings are applied at every start.
    builtin_repos: tuple[Repo, ...] = field(default=())

    def check_writable(self, repo: str) -> None:
        """Refuse a write before anything is read or stored: a refusal is a real 403."""
        if self.writable_repos is not None and repo not in self.writable_repos:
            raise Forbidden(self.read_only_message)


def policy_for(
    settings: ServiceSettings,
    *,
    writable_repos: frozenset[str] | None,
    builtin_repos: tuple[Repo, ...],
    accel_redirect: str = "",
) -> ArtifactPolicy:
    """A node's policy from its settings: the storage and upload rules every node shares."""
    return ArtifactPolicy(
        node_id=settings.node_id,
        version=__version__,
        max_upload_bytes=settings.max_upload_bytes,
        writable_repos=writable_repos,
        redirect_downloads=settings.storage.redirect_downloads,
        presign_expiry=settings.storage.presign_expiry,
        builtin_repos=builtin_repos,
        accel_redirect=accel_redirect,
    )
