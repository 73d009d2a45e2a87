"""The ``distribution`` command: ``serve`` runs the service; every other command calls its REST API."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from repository.cli_scrub import scrub_group
from repository.cli_support import emit, imported_when_called, remote_options, serve_command
from repository.client import call, download
from wire.jsonstrict import JsonRefused, loads

from . import __version__
from . import cli_edges as edges_cli
from .cli_args import bundle_name, bundle_version, optional_bundle_name, repo_key
from .cli_webhooks import webhook
from .pages import PAGE_SIZE
from .plugins import plugins

V1 = "/distribution/api/v1"
remote = remote_options("DISTRIBUTION", "http://127.0.0.1:8080")
as_json = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Distribution service: source repos, signed Release Bundles."""


main.add_command(
    serve_command(
        "distribution service",
        default_data_dir="dist-data",
        default_port=8080,
        load=imported_when_called("distribution.settings:load_distribution_settings"),
        create_app=imported_when_called("distribution.app:create_app"),
    )
)


def _bundle_line(b: dict[str, Any]) -> str:
    signed = f" signed by {b['signed_by'][-16:]}" if b.get("signed_by") else ""
    return (
        f"{b['name']} {b['version']}  {b['state']}  {b['artifacts_count']} files, {b['artifacts_size']} bytes{signed}"
    )


def _bundle_text(b: dict[str, Any]) -> str:
    lines = [_bundle_line(b), f"created {b['created']} by {b['created_by']}"]
    if b.get("manifest_sha256"):
        lines.append(f"manifest sha256 {b['manifest_sha256']}")
    lines += [
        f"  {a['targetRepoPath']}  <- {a['sourceRepoPath']}  {a['checksum'][:12]}" for a in b.get("artifacts", [])
    ]
    return "\n".join(lines)


@main.group()
def bundle() -> None:
    """Create, sign, inspect and delete Release Bundles."""


def _spec_body(
    patterns: tuple[str, ...], aqls: tuple[str, ...], props: str | None, spec_file: Path | None, description: str
) -> dict[str, Any]:
    if bool(patterns or aqls) == bool(spec_file):
        raise click.UsageError("give --pattern or --aql (one or more of either) or --spec FILE")
    if props is not None and not patterns:
        raise click.UsageError("--props narrows --pattern queries: give --pattern too")
    if spec_file is not None:
        try:
            spec = loads(spec_file.read_bytes())  # as strictly as the service will read it
        except (OSError, JsonRefused) as exc:
            raise click.UsageError(f"cannot read spec {spec_file}: {exc}") from None
    else:
        queries = [{"pattern": p} | ({"props": props} if props is not None else {}) for p in patterns]
        spec = {"queries": [*queries, *({"aql": a} for a in aqls)]}
    return {"description": description, "spec": spec}


def _bundle_options(fn: Any) -> Any:
    for option in (
        click.option("--pattern", "patterns", multiple=True, help="repo/glob of files to include (repeatable)."),
        click.option(
            "--aql",
            "aqls",
            multiple=True,
            help='AQL items.find({...}) of files to include (repeatable), e.g. by "@key".',
        ),
        click.option("--props", help="Only --pattern files with all these properties: 'RC1-Approved=true;stage=qa'."),
        click.option(
            "--spec",
            "spec_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help='JSON file with a full spec ({"queries": [...]}).',
        ),
        click.option("--description", default=""),
        click.option("--sign", is_flag=True, help="Sign at once."),
        click.option("--signing-key", "alias", help="Alias of the signing key (default key otherwise)."),
        click.option("--dry-run", is_flag=True, help="Show what would be in the bundle; store nothing."),
    ):
        fn = option(fn)
    return fn


@bundle.command("create")
@remote
@as_json
@_bundle_options
@bundle_name
@bundle_version
def bundle_create(
    url: str,
    token: str | None,
    as_json: bool,
    name: str,
    version: str,
    patterns: tuple[str, ...],
    aqls: tuple[str, ...],
    props: str | None,
    spec_file: Path | None,
    description: str,
    sign: bool,
    alias: str | None,
    dry_run: bool,
) -> None:
    """Create bundle NAME VERSION from files in source repos."""
    body = {
        "name": name,
        "version": version,
        **_spec_body(patterns, aqls, props, spec_file, description),
        "sign_immediately": sign,
        "dry_run": dry_run,
    }
    if alias:
        body["signing_key_alias"] = alias
    emit(call(url, token, "POST", f"{V1}/release_bundle", body), as_json, _bundle_text)


@bundle.command("update")
@remote
@as_json
@_bundle_options
@bundle_name
@bundle_version
def bundle_update(
    url: str,
    token: str | None,
    as_json: bool,
    name: str,
    version: str,
    patterns: tuple[str, ...],
    aqls: tuple[str, ...],
    props: str | None,
    spec_file: Path | None,
    description: str,
    sign: bool,
    alias: str | None,
    dry_run: bool,
) -> None:
    """Replace the content of an unsigned bundle."""
    body = {**_spec_body(patterns, aqls, props, spec_file, description), "sign_immediately": sign, "dry_run": dry_run}
    if alias:
        body["signing_key_alias"] = alias
    emit(call(url, token, "PUT", f"{V1}/release_bundle/{name}/{version}", body), as_json, _bundle_text)


@bundle.command("sign")
@remote
@as_json
@click.option("--signing-key", "alias", help="Alias of the signing key (default key otherwise).")
@bundle_name
@bundle_version
def bundle_sign(url: str, token: str | None, as_json: bool, alias: str | None, name: str, version: str) -> None:
    """Sign a bundle: from then on it never changes."""
    body = {"signing_key_alias": alias} if alias else {}
    emit(call(url, token, "POST", f"{V1}/release_bundle/{name}/{version}/sign", body), as_json, _bundle_line)


@bundle.command("show")
@remote
@as_json
@bundle_name
@bundle_version
def bundle_show(url: str, token: str | None, as_json: bool, name: str, version: str) -> None:
    """Show a bundle and its files."""
    emit(call(url, token, "GET", f"{V1}/release_bundle/{name}/{version}"), as_json, _bundle_text)


@bundle.command("list")
@remote
@as_json
@optional_bundle_name
def bundle_list(url: str, token: str | None, as_json: bool, name: str | None) -> None:
    """List bundles (or the versions of NAME), newest first, every page."""
    path = f"{V1}/release_bundle" + (f"/{name}" if name else "")
    bundles: list[dict[str, Any]] = []
    while True:
        page = call(url, token, "GET", path, start_pos=str(len(bundles)))
        if not isinstance(page, list):
            raise click.ClickException(f"unexpected answer from {path}: not a list of bundles")
        bundles += page
        if len(page) < PAGE_SIZE:
            break
    emit(bundles, as_json, lambda items: "\n".join(_bundle_line(b) for b in items) or "no bundles")


@bundle.command("delete")
@remote
@bundle_name
@bundle_version
def bundle_delete(url: str, token: str | None, name: str, version: str) -> None:
    """Delete a bundle version from the service."""
    call(url, token, "DELETE", f"{V1}/release_bundle/{name}/{version}")
    click.echo(f"deleted {name} {version}", err=True)


@bundle.command("sbom")
@remote
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write it to FILE, not standard output."
)
@bundle_name
@bundle_version
def bundle_sbom(url: str, token: str | None, output: Path | None, name: str, version: str) -> None:
    """Fetch a bundle's CycloneDX SBOM, checked against the sha256 the service sends with it
    (the one its signed manifest names)."""
    data, headers = download(url, token, f"{V1}/release_bundle/{name}/{version}/sbom")
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != headers.get("X-Checksum-Sha256"):
        raise click.ClickException(
            f"the SBOM received has sha256 {sha256}, not the {headers.get('X-Checksum-Sha256')} sent"
        )
    if output is None:
        click.echo(data, nl=False)
        return
    output.write_bytes(data)
    click.echo(f"wrote {output}: {len(data)} bytes, sha256 {sha256}", err=True)


@main.group()
def keys() -> None:
    """Signing keys: list, upload, export the public key."""


@keys.command("list")
@remote
@as_json
def keys_list(url: str, token: str | None, as_json: bool) -> None:
    """List signing keys (public parts only)."""

    def human(answer: dict[str, Any]) -> str:
        return "\n".join(
            f"{k['alias']}  {k['fingerprint']}  {k['algorithm']}{'  (default)' if k['default'] else ''}"
            for k in answer["keys"]
        )

    emit(call(url, token, "GET", f"{V1}/keys/gpg"), as_json, human)


@keys.command("upload")
@remote
@as_json
@click.option("--alias", required=True, help="Name to sign with later.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default signing key.")
@click.option("--passphrase", envvar="DISTRIBUTION_KEY_PASSPHRASE", help="[$DISTRIBUTION_KEY_PASSPHRASE]")
@click.argument("private_key", type=click.File("r"))
def keys_upload(
    url: str, token: str | None, as_json: bool, alias: str, make_default: bool, passphrase: str | None, private_key: Any
) -> None:
    """Upload an ASCII-armored private key (a file, or - for standard input)."""
    body: dict[str, Any] = {"alias": alias, "key": {"private_key": private_key.read()}, "default": make_default}
    if passphrase:
        body["passphrase"] = passphrase
    answer = call(url, token, "POST", f"{V1}/keys/gpg", body)
    emit(answer, as_json, lambda a: f"{a['key']['alias']}  {a['key']['fingerprint']}")


@keys.command("export")
@remote
@click.option("--alias", help="Key to export (the default key otherwise).")
def keys_export(url: str, token: str | None, alias: str | None) -> None:
    """Print the armored public key, for edges to trust."""
    params = {"alias": alias} if alias else {}
    click.echo(call(url, token, "GET", f"{V1}/keys/gpg/public", **params), nl=False)


@main.group()
def repo() -> None:
    """Source repositories."""


@repo.command("create")
@remote
@as_json
@click.option("--description", default="")
@repo_key
def repo_create(url: str, token: str | None, as_json: bool, description: str, key: str) -> None:
    """Create a local generic source repo."""
    body = {"rclass": "local", "packageType": "generic", "description": description}
    emit(call(url, token, "PUT", f"/artifactory/api/repositories/{key}", body), as_json, lambda r: r["key"])


@repo.command("list")
@remote
@as_json
def repo_list(url: str, token: str | None, as_json: bool) -> None:
    """List repos."""
    emit(
        call(url, token, "GET", "/artifactory/api/repositories"),
        as_json,
        lambda repos: "\n".join(f"{r['key']}  {r['type']}  {r['packageType']}" for r in repos),
    )


for command in (
    edges_cli.edge,
    edges_cli.distribute,
    edges_cli.repair,
    edges_cli.status,
    edges_cli.undistribute,
    edges_cli.abort,
):
    main.add_command(command)
keys.add_command(edges_cli.keys_propagate)
main.add_command(scrub_group(remote))
main.add_command(webhook)
for plugin in plugins():
    for _command in (*([plugin.cli] if hasattr(plugin, "cli") else []), *getattr(plugin, "commands", ())):
        main.add_command(_command)

if __name__ == "__main__":
    sys.exit(main())
