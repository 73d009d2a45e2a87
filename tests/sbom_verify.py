"""Verifying a bundle's SBOM with plain tools, as README "SBOMs" tells a user to: curl, gpg,
sha256sum, jq, in a shell, with a GnuPG home that trusts only the service's exported key.

``verify_sbom_with_plain_tools`` is the check of the end-to-end stories: it runs that very
shell script and answers the SBOM's bytes and the fingerprint that signed the manifest.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# What README "SBOMs" shows, word for word apart from the variables; `set -e` makes any failed
# step (a bad signature, a sha256 or size that differs) fail the script.
SCRIPT = r"""
set -euo pipefail
auth() { echo "Authorization: Bearer $1"; }
api="$DIST/distribution/api/v1/release_bundle/$NAME/$VERSION"
curl -sSf --noproxy '*' -H "$(auth "$DIST_TOKEN")" "$api/manifest" -o manifest.json
curl -sSf --noproxy '*' -H "$(auth "$DIST_TOKEN")" "$api/signature" -o manifest.json.asc
curl -sSf --noproxy '*' -H "$(auth "$DIST_TOKEN")" "$DIST/distribution/api/v1/keys/gpg/public" -o distribution.asc
gpg --batch --no-autostart --import distribution.asc
gpg --batch --no-autostart --status-fd 3 --verify manifest.json.asc manifest.json 3>gpg-status.txt
curl -sSf --noproxy '*' -H "$(auth "$EDGE_TOKEN")" \
  "$EDGE/artifactory/api/distribution/release_bundle/$NAME/$VERSION/sbom" -o sbom.cdx.json
test "$(sha256sum sbom.cdx.json | cut -d' ' -f1)" = "$(jq -r .sbom.sha256 manifest.json)"
test "$(stat -c %s sbom.cdx.json)" = "$(jq -r .sbom.size manifest.json)"
"""


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str


@dataclass(frozen=True)
class VerifiedSbom:
    data: bytes
    signer: str  # the full fingerprint of the key that signed the manifest naming it


def verify_sbom_with_plain_tools(
    workdir: Path, service: Endpoint, edge: Endpoint, name: str, version: str
) -> VerifiedSbom:
    """Run the README's commands in ``workdir`` (made here, GnuPG home inside it); fails the test
    with their output when any step fails."""
    workdir.mkdir(parents=True)
    home = workdir / "gnupg"
    home.mkdir(mode=0o700)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "GNUPGHOME": str(home),
        "DIST": service.url,
        "DIST_TOKEN": service.token,
        "EDGE": edge.url,
        "EDGE_TOKEN": edge.token,
        "NAME": name,
        "VERSION": version,
    }
    try:
        done = subprocess.run(["bash", "-c", SCRIPT], cwd=workdir, env=env, capture_output=True, timeout=120)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)
    assert done.returncode == 0, f"plain-tools check failed:\n{done.stdout.decode()}\n{done.stderr.decode()}"
    status = (workdir / "gpg-status.txt").read_text()
    validsig = [line.split() for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    assert len(validsig) == 1, status
    return VerifiedSbom((workdir / "sbom.cdx.json").read_bytes(), validsig[0][2])
