"""What a node lets clients do with its repos: one implementation, two policies.

An edge accepts writes only in its uploads repo; the distribution service hosts
writable source repos. Handlers ask the policy and never know which node they run in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Repo
from .errors import EDGE_READ_ONLY_MESSAGE, Forbidden

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
    # Repos that exist on this node from the start; their settings are applied at every start.
    builtin_repos: tuple[Repo, ...] = field(default=())

    def check_writable(self, repo: str) -> None:
        """Refuse a write before anything is read or stored: a refusal is a real 403."""
        if self.writable_repos is not None and repo not in self.writable_repos:
            raise Forbidden(self.read_only_message)


def edge_policy(
    *,
    node_id: str,
    version: str,
    max_upload_bytes: int,
    redirect_downloads: bool,
    presign_expiry: int,
    uploads_anonymous_read: bool,
) -> ArtifactPolicy:
    return ArtifactPolicy(
        node_id=node_id,
        version=version,
        max_upload_bytes=max_upload_bytes,
        writable_repos=frozenset({EDGE_UPLOADS_REPO}),
        redirect_downloads=redirect_downloads,
        presign_expiry=presign_expiry,
        builtin_repos=(Repo(EDGE_UPLOADS_REPO, anonymous_read=uploads_anonymous_read),),
    )
