"""``distribution edge|distribute|status|undistribute|abort`` and ``keys propagate``: REST calls, like every command."""

from __future__ import annotations

from typing import Any

import click

from repository.cli_support import emit, remote_options
from repository.client import call

from .cli_args import bundle_name, bundle_version, edge_name
from .progress import follow, status_text

V1 = "/distribution/api/v1"
remote = remote_options("DISTRIBUTION", "http://127.0.0.1:8080")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")


@click.group()
def edge() -> None:
    """Edges to distribute to: add, list, remove."""


@edge.command("add")
@click.option("--service-url", "url", envvar="DISTRIBUTION_URL", default="http://127.0.0.1:8080", show_default=True,
              help="The Distribution service [$DISTRIBUTION_URL].")  # fmt: skip
@click.option("--service-token", "token", envvar="DISTRIBUTION_TOKEN", help="Its admin token [$DISTRIBUTION_TOKEN].")
@as_json
@click.option(
    "--mode",
    type=click.Choice(["push", "pull"]),
    default="push",
    show_default=True,
    help="push: the service calls the edge at --url; pull: the edge polls the service (no --url).",
)
@click.option("--url", "edge_url", help="The edge's base URL, e.g. http://edge:8082 (push mode).")
@click.option("--site", required=True, help="Site name (distribution rules match it).")
@click.option("--city", required=True, help="City name.")
@click.option("--country", required=True, help="Two-letter country code.")
@click.option("--token", "edge_token", envvar="DISTRIBUTION_EDGE_TOKEN",
              help="The edge's distributor token [$DISTRIBUTION_EDGE_TOKEN]; admin for keys (push mode).")  # fmt: skip
@click.option("--via", "parent", metavar="PARENT",
              help="A parent edge that relays bundles to this one; the service pushes to the parent.")  # fmt: skip
@edge_name
def edge_add(url: str, token: str | None, as_json: bool, mode: str, edge_url: str | None, site: str, city: str,
             country: str, edge_token: str | None, parent: str | None, name: str) -> None:  # fmt: skip
    """Register edge NAME (adding it again with the same settings is fine).

    A pull-mode edge gets a credential to poll the service with, printed this once: set it as
    the edge's [pull] credential (or credential_file). `distribution edge credential` mints a new one."""
    body: dict[str, Any] = {"name": name, "site_name": site, "city_name": city, "country_code": country}
    if mode == "pull":
        body["mode"] = "pull"
    body |= {k: v for k, v in (("url", edge_url), ("token", edge_token), ("parent", parent)) if v is not None}
    answer = call(url, token, "POST", f"{V1}/edges", body)
    emit(answer, as_json, _edge_line)
    if answer.get("credential") and not as_json:
        click.echo(answer["credential"])


def _edge_line(e: dict[str, Any]) -> str:
    health = {True: "healthy", False: "unreachable", None: "unchecked"}[e.get("healthy")]
    seen = f", last seen {e['last_seen']}" if e.get("last_seen") else ""
    error = f" ({e['last_error']})" if e.get("last_error") and not e.get("healthy") else ""
    where = e["url"] or "pull mode"
    via = f"  via {e['parent']}" if e.get("parent") else ""
    return f"{e['name']}  {where}{via}  {e['site_name']}/{e['city_name']}/{e['country_code']}  {health}{seen}{error}"


@edge.command("list")
@remote
@as_json
def edge_list(url: str, token: str | None, as_json: bool) -> None:
    """List edges with their health (each is pinged now)."""
    emit(call(url, token, "GET", f"{V1}/edges"), as_json, lambda es: "\n".join(map(_edge_line, es)) or "no edges")


@edge.command("credential")
@remote
@as_json
@click.option("--revoke", is_flag=True, help="Only revoke the current one: the edge can no longer poll.")
@edge_name
def edge_credential(url: str, token: str | None, as_json: bool, revoke: bool, name: str) -> None:
    """Mint a new credential for pull-mode edge NAME and print it (the old one stops working)."""
    if revoke:
        call(url, token, "DELETE", f"{V1}/edges/{name}/credential")
        click.echo(f"revoked the credential of edge {name}", err=True)
        return
    emit(call(url, token, "POST", f"{V1}/edges/{name}/credential"), as_json, lambda a: a["credential"])


@edge.command("remove")
@remote
@edge_name
def edge_remove(url: str, token: str | None, name: str) -> None:
    """Forget edge NAME (what it holds stays there)."""
    call(url, token, "DELETE", f"{V1}/edges/{name}")
    click.echo(f"removed edge {name}", err=True)


def _rule_options(fn: Any) -> Any:
    for option in (
        click.option("--site", default="*", show_default=True, help="Site name wildcard."),
        click.option("--city", default="*", show_default=True, help="City name wildcard."),
        click.option("--country", "countries", multiple=True, help="Country code (wildcards; repeatable) [*]."),
        click.option("--dry-run", is_flag=True, help="Show the target edges; change nothing."),
    ):
        fn = option(fn)
    return fn


def _rules(site: str, city: str, countries: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"site_name": site, "city_name": city, "country_codes": list(countries) or ["*"]}]


def _sites_text(answer: dict[str, Any]) -> str:
    names = ", ".join(s["name"] for s in answer["sites"])
    return f"distribution {answer['id']} to {names}" if answer.get("id") is not None else f"would go to {names}"


@click.command("distribute")
@remote
@as_json
@_rule_options
@click.option("--wait", is_flag=True, help="Follow progress until done; exit 1 if it failed.")
@bundle_name
@bundle_version
def distribute(url: str, token: str | None, as_json: bool, site: str, city: str, countries: tuple[str, ...],
               dry_run: bool, wait: bool, name: str, version: str) -> None:  # fmt: skip
    """Push signed bundle NAME VERSION to the edges the rules match."""
    body = {"distribution_rules": _rules(site, city, countries), "dry_run": dry_run}
    answer = call(url, token, "POST", f"{V1}/distribution/{name}/{version}", body)
    _answered(url, token, as_json, name, version, answer, wait and not dry_run)


def _answered(url: str, token: str | None, as_json: bool, name: str, version: str, answer: dict[str, Any],
              wait: bool) -> None:  # fmt: skip
    """Print a distribution's answer; with ``wait``, follow it to its end (exit 1 unless Completed)."""
    if not wait:
        emit(answer, as_json, _sites_text)
        return
    click.echo(_sites_text(answer), err=True)
    final = follow(url, token, name, version, answer["id"])
    if as_json:
        emit(final, True, str)
    if final["status"] != "Completed":
        raise click.ClickException(f"distribution {answer['id']} {final['status']}")


@click.command("repair")
@remote
@as_json
@click.option("--dry-run", is_flag=True, help="Show the edges that hold it; change nothing.")
@click.option("--wait", is_flag=True, help="Follow progress until done; exit 1 if it failed.")
@bundle_name
@bundle_version
def repair(url: str, token: str | None, as_json: bool, dry_run: bool, wait: bool, name: str, version: str) -> None:
    """Send NAME VERSION again to every edge that holds it: only what each lacks (lost, or
    quarantined by its scrub), then check each again."""
    answer = call(url, token, "POST", f"{V1}/distribution/{name}/{version}/repair", {"dry_run": dry_run})
    _answered(url, token, as_json, name, version, answer, wait and not dry_run)


@click.command("status")
@remote
@as_json
@bundle_name
@bundle_version
def status(url: str, token: str | None, as_json: bool, name: str, version: str) -> None:
    """Distributions of NAME VERSION, newest first, per edge."""
    answer = call(url, token, "GET", f"{V1}/release_bundle/{name}/{version}/distribution")
    emit(answer, as_json, lambda ds: "\n".join(map(status_text, ds)) or f"{name} {version} Not distributed")


@click.command("undistribute")
@remote
@as_json
@_rule_options
@click.option("--delete", "delete_after", is_flag=True, help="Also delete the bundle here once removed from edges.")
@bundle_name
@bundle_version
def undistribute(url: str, token: str | None, as_json: bool, site: str, city: str, countries: tuple[str, ...],
                 dry_run: bool, delete_after: bool, name: str, version: str) -> None:  # fmt: skip
    """Remove NAME VERSION from the edges the rules match."""
    body = {
        "distribution_rules": _rules(site, city, countries),
        "dry_run": dry_run,
        "on_success": "delete" if delete_after else "keep",
    }
    answer = call(url, token, "POST", f"{V1}/distribution/{name}/{version}/delete", body)
    emit(answer, as_json, lambda a: _sites_text(a).replace("distribution", "removal", 1))


@click.command("abort")
@remote
@as_json
@bundle_name
@bundle_version
def abort(url: str, token: str | None, as_json: bool, name: str, version: str) -> None:
    """Stop every running distribution of NAME VERSION (its edge transactions are aborted)."""
    answer = call(url, token, "PUT", f"{V1}/distribution/{name}/{version}/abort")
    if not answer:
        click.echo(f"nothing in progress for {name} {version}", err=True)
        return
    emit(answer, as_json, lambda a: "aborted on " + ", ".join(s["name"] for s in a["sites"]))


@click.command("propagate")
@remote
@as_json
def keys_propagate(url: str, token: str | None, as_json: bool) -> None:
    """Make every registered edge trust the public signing keys.

    An edge changes its trusted keys only for an admin token, so that a distributor token
    cannot widen the circle of trust: an edge registered with a distributor token answers
    FAILURE (403) here. On such an edge, an operator runs `edge keys trust` with an admin
    token, or the edge is registered with an admin token instead.
    """
    answer = call(url, token, "POST", f"{V1}/keys/gpg/propagate")

    def human(a: dict[str, Any]) -> str:
        lines = [f"{d['name']}  {d['key_alias']}  {d['status']}  {d.get('message', '')}".rstrip() for d in a["details"]]
        return "\n".join([a["status"], *lines])

    emit(answer, as_json, human)
    if answer["status"] != "SUCCESS":
        raise click.ClickException(f"propagation {answer['status']}")
