"""A folder URL answered as an HTML listing with download links, as Artifactory answers browsers.

Only a request whose ``Accept`` names ``text/html`` (what browsers send) gets the page; every
other client keeps today's answers (the JSON 404 of a GET on a folder), so scripts and API
clients see no change. The listing shows what the caller may read, as the storage API does.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from aiohttp import web

from repository.catalog import Artifact, Folder
from repository.errors import NotFound
from wire.timestamps import iso

from . import virtual_resolve
from .auth import require_read

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Index of {title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1rem}}table{{border-collapse:collapse;width:100%}}
td,th{{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #ddd;overflow-wrap:anywhere}}
.scroll{{overflow-x:auto}}</style></head>
<body><h1>Index of {title}</h1>
<div class="scroll"><table><thead><tr><th scope="col">Name</th><th scope="col">Last modified</th>
<th scope="col">Size</th><th scope="col">SHA-256</th></tr></thead><tbody>
{rows}
</tbody></table></div></body></html>
"""


def wants_html(request: web.Request) -> bool:
    """Whether the client asked for HTML by name with a weight above 0 (browsers do; API clients
    send ``*/*``, JSON or nothing)."""
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() in ("text/html", "application/xhtml+xml"):
            weights = [p[2:] for p in params if p.lower().startswith("q=")]
            try:
                return not weights or float(weights[0]) > 0
            except ValueError:
                return False
    return False


def _row(href: str, name: str, modified: str = "", size: str = "", sha256: str = "") -> str:
    cells = "".join(f"<td>{escape(c)}</td>" for c in (modified, size, sha256))
    return f'<tr><td><a href="{escape(href)}">{escape(name)}</a></td>{cells}</tr>'


async def folder_listing(request: web.Request, repo: str, path: str) -> tuple[list[Folder], list[Artifact]]:
    """The sub-folders and files of folder ``path`` in ``repo`` the caller may see (it must be
    allowed to read the folder); NotFound if it is no folder."""
    await require_read(request, repo, path)
    if isinstance(await virtual_resolve.item_at(request, repo, path), Artifact):
        raise NotFound()
    listing = await virtual_resolve.listing(request, repo, path)
    return listing.folders, listing.files


async def folder_page(request: web.Request, repo: str, path: str) -> web.Response:
    """The listing of folder ``path`` in ``repo``. A folder URL without its trailing slash is
    redirected to it, so that relative links resolve."""
    folders, files = await folder_listing(request, repo, path)
    raw = request.raw_path.split("?", 1)[0]
    if not raw.endswith("/"):
        raise web.HTTPMovedPermanently(raw + "/")
    rows = [_row("../", "../")] if path else []
    names = [f.path.rpartition("/")[2] for f in folders]
    rows += [_row(quote(n) + "/", n + "/", iso(f.created)) for n, f in zip(names, folders, strict=True)]
    rows += [_row(quote(a.name), a.name, iso(a.modified), str(a.size), a.sha256) for a in files]
    title = escape(f"{repo}/{path}/" if path else f"{repo}/")
    return web.Response(text=PAGE.format(title=title, rows="\n".join(rows)), content_type="text/html")
