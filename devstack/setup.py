"""``python -m devstack.setup``: wire services that already run (the compose ``setup`` service).

The same steps as ``make run`` after its processes are up: each edge trusts the
Distribution service's key and issues it a distributor token, the service registers each
edge, and the signed demo bundle is made. It waits until every service answers first,
and can run again at any time (``--state`` keeps the distributor tokens between runs).

    python -m devstack.setup --url http://distribution:8080 --token ... \\
        --edge edge-1=http://edge-1:8082 --edge edge-2=http://edge-2:8082 --edge-token ...
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from .content import deploy_demo
from .healthcheck import healthy
from .rest import CallFailed
from .wiring import EdgeTarget, State, connect, edge_target

WAIT_POLL = 1.0


def parse_edge(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not NAME=URL, e.g. edge-1=http://edge-1:8082")
    return name, url


def wait_for(urls: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while not healthy(url):
            if time.monotonic() > deadline:
                raise click.ClickException(f"{url} did not answer its ping within {timeout:.0f} s")
            time.sleep(WAIT_POLL)


@click.command()
@click.option("--url", envvar="DISTRIBUTION_URL", default="http://127.0.0.1:8080", show_default=True,
              help="The Distribution service, as this command reaches it [$DISTRIBUTION_URL].")  # fmt: skip
@click.option("--token", envvar="DISTRIBUTION_TOKEN", required=True,
              help="The service's admin token [$DISTRIBUTION_TOKEN].")  # fmt: skip
@click.option("--edge", "edges", multiple=True, required=True,
              help="NAME=URL of an edge, as the service reaches it (repeat).")  # fmt: skip
@click.option("--edge-token", envvar="EDGE_TOKEN", required=True, help="The edges' admin token [$EDGE_TOKEN].")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file keeping the distributor tokens, so a second run reuses them.")  # fmt: skip
@click.option("--demo/--no-demo", default=True, show_default=True, help="Also make the signed bundle demo 1.0.0.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0), default=120, show_default=True,
              help="Seconds to wait for every service to answer.")  # fmt: skip
def main(
    url: str,
    token: str,
    edges: tuple[str, ...],
    edge_token: str,
    state: Path | None,
    demo: bool,
    wait_seconds: float,
) -> None:
    """Set up the circle of trust between a running Distribution service and its edges."""
    named = [parse_edge(e) for e in edges]
    targets: list[EdgeTarget] = [edge_target(i, u, edge_token, name=n) for i, (n, u) in enumerate(named)]
    url = url.rstrip("/")
    wait_for([url, *(t.url for t in targets)], wait_seconds)
    try:
        connect(url, token, targets, State(state), lambda line: click.echo(f"✓ {line}"))
        if demo:
            bundle = deploy_demo(url, token)
            click.echo(f"✓ bundle {bundle.name} {bundle.version} {bundle.state}: {len(bundle.files)} files")
    except CallFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Ready: distribution distribute demo 1.0.0 --wait --url {url}")


if __name__ == "__main__":
    main()
