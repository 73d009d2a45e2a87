"""The local topology: ``distribution serve`` and N × ``edge serve``, each with its own data dir under one run dir.

Layout of the run dir (``.run/`` for ``make run``)::

    distribution/   the service's data (catalog, blobs, bundles, GnuPG home and signing key)
    edge-1/ ...     each edge's data
    agents/         one directory per device: ``data/`` (node-agent's data dir), ``root/`` (where it
                    installs the demo app), ``agent.log``
    logs/           one log per service (JSON lines)
    tokens.json     admin tokens of every service and the distributor token of each edge (mode 0600)

Admin tokens are made once and kept, so a second run finds the same data with the same tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from .content import DemoBundle, deploy_demo
from .fleet import DemoFleet, FleetCli, start_demo_fleet
from .processes import ServiceProcess, Supervisor, serve_command, service_environment
from .wiring import EdgeTarget, Say, State, connect, edge_target

DISTRIBUTION_PORT = 8080
EDGE_PORTS = (8082, 8083)
AGENTS = 2
TOKENS_FILE = "tokens.json"


@dataclass(frozen=True)
class Ready:
    """What a user needs to reach the running topology."""

    distribution_url: str
    distribution_token: str
    edges: list[EdgeTarget]
    bundle: DemoBundle
    run_dir: Path
    fleet: DemoFleet


class LocalTopology:
    def __init__(
        self,
        run_dir: Path,
        *,
        host: str = "127.0.0.1",
        distribution_port: int = DISTRIBUTION_PORT,
        edge_ports: tuple[int, ...] = EDGE_PORTS,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.host = host
        self.distribution_port = distribution_port
        self.edge_ports = edge_ports
        self.supervisor = Supervisor()
        self.state = State(self.run_dir / TOKENS_FILE)
        self.fleet: DemoFleet | None = None

    def _admin_token(self, section: str) -> str:
        token = self.state.get(section, "admin_token")
        if token is None:
            token = "adm_" + secrets.token_urlsafe(24)
            self.state.set(section, "admin_token", token)
        return token

    def _serve(self, name: str, program: str, port: int, settings: dict[str, str]) -> ServiceProcess:
        data_dir = self.run_dir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = serve_command(program, data_dir, self.host, port)
        log = self.run_dir / "logs" / f"{name}.log"
        child = ServiceProcess(name, argv, service_environment(settings), log, cwd=self.run_dir)
        return self.supervisor.start(child)

    def start(self, say: Say) -> Ready:
        """Start every service, wait until each answers, wire the circle of trust, deploy the demo
        bundle, then the fleet: the demo app on the edges and enrolled agents running."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dist_token = self._admin_token("distribution")
        distribution = self._serve(
            "distribution",
            "distribution",
            self.distribution_port,
            {"DISTRIBUTION_ADMIN_TOKEN": dist_token, "DISTRIBUTION_NODE_ID": "distribution"},
        )
        edges = []
        for index, port in enumerate(self.edge_ports):
            name = f"edge-{index + 1}"
            token = self._admin_token(name)
            # one worker per edge keeps the local topology light (edge serve --workers N in production)
            settings = {"EDGE_ADMIN_TOKEN": token, "EDGE_NODE_ID": name, "EDGE_WORKERS": "1"}
            child = self._serve(name, "edge", port, settings)
            edges.append((child, token))
        dist_url = distribution.wait_ready()
        say(f"distribution service ready at {dist_url}")
        targets = []
        for index, (child, token) in enumerate(edges):
            url = child.wait_ready()
            say(f"{child.name} ready at {url}")
            targets.append(edge_target(index, url, token, name=child.name))
        # registered with their admin tokens: edges trust the fleet's URL key only from an admin
        connect(dist_url, dist_token, targets, self.state, say, admin_registration=True)
        bundle = deploy_demo(dist_url, dist_token)
        say(f"bundle {bundle.name} {bundle.version} {bundle.state}: {len(bundle.files)} files in {bundle.repo}")
        self.fleet = DemoFleet([], "", {})  # agents started so far are stopped even if the start fails
        self.fleet = start_demo_fleet(self.run_dir, FleetCli(dist_url, dist_token), AGENTS, say, self.fleet.agents)
        return Ready(dist_url, dist_token, targets, bundle, self.run_dir, self.fleet)

    def stop(self) -> dict[str, int | None]:
        """The agents first (SIGTERM), then the demo apps they started, then every service."""
        codes = {}
        for agent in self.fleet.agents if self.fleet else []:
            codes[agent.name] = agent.stop_all()
        return codes | self.supervisor.stop()
