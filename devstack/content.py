"""The demo release: a few files in a source repo and the signed bundle ``demo 1.0.0`` made from them.

The files are the same bytes on every run (no clock, no randomness), so running again
deploys identical content and finds the bundle it signed before.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from urllib.parse import quote

from .rest import expect

REPO = "releases-local"
NAME, VERSION = "demo", "1.0.0"
FOLDER = f"{NAME}/{VERSION}"
V1 = "/distribution/api/v1"
DATA_SIZE = 2 * 1024 * 1024


@dataclass(frozen=True)
class DemoBundle:
    name: str
    version: str
    repo: str
    files: dict[str, bytes]  # path in the repo -> content
    state: str

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


def _tarball() -> bytes:
    """``demo-1.0.0.tar.gz`` with a script and a version file, byte for byte reproducible."""
    members = {
        f"demo-{VERSION}/hello.sh": b'#!/bin/sh\necho "hello from demo ' + VERSION.encode() + b'"\n',
        f"demo-{VERSION}/VERSION": VERSION.encode() + b"\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o755 if path.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def demo_files() -> dict[str, bytes]:
    files = {
        f"{FOLDER}/README.md": (
            f"# demo {VERSION}\n\nA release bundle made by `make run`: signed by the Distribution service,\n"
            "verified by every edge it reaches.\n"
        ).encode(),
        f"{FOLDER}/demo-{VERSION}.tar.gz": _tarball(),
        # big enough to watch a transfer and to try a resumed download (curl -C -)
        f"{FOLDER}/demo-{VERSION}-data.bin": hashlib.shake_256(b"demo data").digest(DATA_SIZE),
    }
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path.rsplit('/', 1)[1]}\n" for path, data in files.items())
    files[f"{FOLDER}/SHA256SUMS"] = sums.encode()
    return files


def publish_bundle(
    distribution_url: str, admin_token: str, name: str, version: str, files: dict[str, bytes], description: str
) -> str:
    """Create the source repo, deploy ``files`` (path in the repo -> content) under ``name/version/``,
    create and sign the bundle of that folder (all idempotent); answers the bundle's state."""
    repos = f"{distribution_url}/artifactory/api/repositories/{REPO}"
    expect((200, 201, 409), "PUT", repos, admin_token, {"rclass": "local", "packageType": "generic"})
    for path, data in files.items():
        headers = {"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()}
        url = f"{distribution_url}/artifactory/{REPO}/{quote(path)}"
        expect((200, 201), "PUT", url, admin_token, data=data, headers=headers)
    body = {
        "name": name,
        "version": version,
        "description": description,
        "spec": {"queries": [{"pattern": f"{REPO}/{name}/{version}/*"}]},
        "sign_immediately": True,
    }
    expect((200, 201, 409), "POST", f"{distribution_url}{V1}/release_bundle", admin_token, body)
    bundle_url = f"{distribution_url}{V1}/release_bundle/{name}/{version}"
    state = str(expect((200,), "GET", bundle_url, admin_token)["state"])
    if state == "OPEN":  # made unsigned by hand since: sign it now
        state = str(expect((200,), "POST", bundle_url + "/sign", admin_token, {})["state"])
    return state


def deploy_demo(distribution_url: str, admin_token: str) -> DemoBundle:
    """Create the source repo, deploy the files, create and sign the bundle (all idempotent)."""
    files = demo_files()
    state = publish_bundle(distribution_url, admin_token, NAME, VERSION, files, "The demo release of make run")
    return DemoBundle(NAME, VERSION, REPO, files, state)
