"""Listings that real clients can read: dohq-artifactory against a real ``edge serve``, on
files whose names a URL must encode.

dohq-artifactory joins each child's ``uri`` to the folder's path as a name and encodes the
result itself, so the storage API answers names, not URLs, as Artifactory does.
"""

from __future__ import annotations

from urllib.parse import quote

import requests

from devstack.services import EdgeProcess
from tests.test_edge_clients import UPLOADS, artifactory_path, no_proxies  # noqa: F401  (fixture)

# Names real trees have: spaces, '+', '%' (also before hex digits), '#', non-ASCII, and the
# longest a name may be (255 bytes, in ASCII and in two-byte characters).
ODD_NAMES = [
    "with space.txt",
    "a+b.txt",
    "100%.txt",
    "50%25 off.txt",
    "#1.txt",
    "café",
    "naïve #1 + 50% off.tar.gz",
    "ünïcödé ☃ 日本.bin",
    "x" * 255,
    "é" * 127 + "x",
]


def test_dohq_artifactory_lists_and_reads_files_with_unusual_names(edge_server: EdgeProcess) -> None:
    contents = {name: f"the file called {name}\n".encode() for name in ODD_NAMES}
    folder = "odd names/sub #1"
    with requests.Session() as session:
        session.trust_env = False
        session.headers["Authorization"] = f"Bearer {edge_server.admin_token}"
        for name, data in contents.items():
            url = f"{edge_server.artifactory_url}/{UPLOADS}/{quote(folder)}/{quote(name, safe='')}"
            assert session.put(url, data=data, timeout=30).status_code == 201, name

    with artifactory_path(f"{edge_server.artifactory_url}/{UPLOADS}", apikey=edge_server.admin_token) as repo:
        (top,) = list((repo / "odd names").iterdir())
        assert top.name == "sub #1" and top.is_dir()
        children = {child.name: child for child in top.iterdir()}
        assert sorted(children) == sorted(ODD_NAMES)
        for name, child in children.items():
            assert child.is_file(), name
            assert child.read_bytes() == contents[name], name
            assert child.stat().size == len(contents[name]), name
