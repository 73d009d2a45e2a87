"""The edge console's pages. Each checks the session, then the same role or permission the API
call it mirrors checks, and calls the function that call uses."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiDict

from repository.console.auth import posted, signed_in
from repository.console.pages import console_page, render
from repository.errors import BadRequest
from repository.http import keys as core
from repository.http.auth import may, require_role
from repository.http.folder_page import folder_listing
from repository.paths import split_repo_path
from repository.permissions import Action
from repository.tokens import Role
from wire.errors import WireError
from wire.timestamps import iso

from ..access.api import rules_json, signed_url
from ..access.audit_api import audit_query, authorize, parse_query, record_json
from ..keys import audit_trail_key

BROWSE = "/ui/browse/"


@console_page
async def repos_page(request: web.Request) -> web.StreamResponse:
    """The repos the caller may read, each a link to its folders."""
    await signed_in(request)
    repos = [r for r in await request.app[core.catalog].list_repos() if may(request, Action.read, r, "")]
    return render(request, "repos.html", {"repos": repos, "browse": BROWSE})


@console_page
async def browse_page(request: web.Request) -> web.StreamResponse:
    """A folder of a repo, as ``/artifactory/{repo}/{path}/`` lists it for browsers, with each file's
    download URL and a signed-URL form for admins."""
    await signed_in(request)
    raw = request.raw_path.split("?", 1)[0].removeprefix(BROWSE)
    repo, path = split_repo_path(raw)
    folders, files = await folder_listing(request, repo, path)
    here = f"{repo}/{path}/" if path else f"{repo}/"
    context = {
        "here": here,
        "parent": BROWSE + quote(here.rstrip("/").rpartition("/")[0] + "/") if path else "/ui/repos",
        "folders": [(f.path.rpartition("/")[2], BROWSE + quote(f"{repo}/{f.path}/"), iso(f.created)) for f in folders],
        "files": [(a, f"/artifactory/{quote(f'{repo}/{a.path}')}", iso(a.modified)) for a in files],
    }
    return render(request, "browse.html", context)


@console_page
async def audit_page(request: web.Request) -> web.StreamResponse:
    """The audit trail searched with the API's own parameters; the export links carry them too."""
    await signed_in(request)
    wanted = MultiDict((k, v) for k, v in request.query.items() if v and k != "format")  # empty fields: unset
    query, _, _ = parse_query(wanted)
    authorize(request, query)
    rows = await request.app[audit_trail_key].store.query(query)
    context = {"records": [record_json(r) for r in rows], "q": wanted, "export": urlencode(wanted)}
    return render(request, "audit.html", context)


async def audit_export(request: web.Request) -> web.StreamResponse:
    """``GET /artifactory/api/audit`` itself (``format=json`` or ``jsonl``), for the signed-in user."""
    await signed_in(request)
    return await audit_query(request)


@console_page
async def rules_page(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, Role.admin)
    return render(request, "rules.html", {"rules": rules_json(request)})


@console_page
async def signed_url_page(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, Role.admin)
    return render(request, "signed_url.html", {"repo_path": request.query.get("repo_path", ""), "url": None})


@console_page
async def create_signed_url(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, Role.admin)
    repo_path, raw = form.get("repo_path", ""), form.get("valid_for_secs", "").strip()
    context = {"repo_path": repo_path, "valid_for_secs": raw, "url": None}
    try:
        if not raw.isdigit() or len(raw) > 12:
            raise BadRequest("'valid for' must be a whole number of seconds")
        context["url"] = await signed_url(request, {"repo_path": repo_path, "valid_for_secs": int(raw)})
    except WireError as exc:  # the form again, with what is wrong
        return render(request, "signed_url.html", context | {"error": exc.message}, status=exc.status)
    return render(request, "signed_url.html", context)
