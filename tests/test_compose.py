"""The Dockerfile and docker-compose.yml, checked as far as a machine without a Docker engine can.

What an operator relies on: every command the containers run is a real command of ours,
every setting they pass is one the services load (a typo would stop a service at start),
the health check answers for a live node, the image installs exactly our dependencies in
a layer of its own before the code, and the S3 server's flags exist and keep telemetry off.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from devstack import setup as devstack_setup
from devstack.services import EdgeProcess, free_port
from distribution.settings import DistributionSettings, load_distribution_settings
from edge.settings import EdgeSettings, load_edge_settings
from tests.seaweed import find_weed

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "edge-distribution:local"
COMMAND_TIMEOUT = 60


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def services_of_ours() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def interpolate(value: Any) -> str:
    """What compose makes of ``${VAR:-default}`` when VAR is unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(v) for k, v in (service.get("environment") or {}).items()}


def setting_names(cls: type, prefix: str) -> set[str]:
    """Every environment variable the settings loader reads for ``cls`` (sections nest as PREFIX_SECTION_KEY)."""
    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            names |= setting_names(tp, f"{prefix}{f.name.upper()}_")
        else:
            names.add(f"{prefix}{f.name.upper()}")
    return names


EDGE_SETTINGS = setting_names(EdgeSettings, "EDGE_")
DISTRIBUTION_SETTINGS = setting_names(DistributionSettings, "DISTRIBUTION_")


def runnable(argv: list[str]) -> list[str]:
    """A container command as it runs here: ``python`` is this interpreter, our scripts are beside it."""
    program = argv[0]
    if program == "python":
        return [sys.executable, *argv[1:]]
    return [str(Path(sys.executable).parent / program), *argv[1:]]


def run_help(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*runnable(argv), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )


def test_compose_has_the_topology_distribution_two_edges_nginx_s3_and_a_one_shot_setup() -> None:
    services = compose()["services"]
    assert set(services) == {"distribution", "edge-1", "edge-2", "nginx", "s3", "setup"}
    assert set(services_of_ours()) == {"distribution", "edge-1", "edge-2", "setup"}
    assert all(s["build"] == "." for s in services_of_ours().values())
    assert services["setup"]["restart"] == "no"
    assert "./nginx/edge.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    for service in services.values():  # nothing is published beyond this machine
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), service


@pytest.mark.parametrize("name", ["distribution", "edge-1", "edge-2", "setup"])
def test_every_command_of_our_containers_is_a_real_command_with_those_options(name: str) -> None:
    command = services_of_ours()[name]["command"]
    done = run_help(command)  # options are parsed before --help answers: a wrong one fails here
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Usage:" in done.stdout


def test_every_setting_the_edges_get_is_one_the_edge_loads() -> None:
    for name in ("edge-1", "edge-2"):
        service = services_of_ours()[name]
        env = environment_of(service)
        assert set(env) <= EDGE_SETTINGS, set(env) - EDGE_SETTINGS
        settings = load_edge_settings(env=env | {"EDGE_DATA_DIR": "/data/edge"})
        assert settings.node_id == name
        assert (settings.storage.backend, settings.storage.prefix) == ("s3", f"{name}/")
        assert settings.storage.redirect_downloads is False  # the S3 server is not reachable from clients
        assert settings.access.trusted_proxies == (compose()["services"]["nginx"]["networks"]["default"]
                                                   ["ipv4_address"] + "/32",)  # fmt: skip


def test_every_setting_the_distribution_service_gets_is_one_it_loads() -> None:
    env = environment_of(services_of_ours()["distribution"])
    assert set(env) <= DISTRIBUTION_SETTINGS, set(env) - DISTRIBUTION_SETTINGS
    settings = load_distribution_settings(env=env)
    assert settings.repos == ("releases-local",) and settings.admin_token


def test_the_setup_service_passes_only_variables_its_command_reads_and_the_same_tokens() -> None:
    services = services_of_ours()
    env = environment_of(services["setup"])
    read = {p.envvar for p in devstack_setup.main.params if isinstance(p.envvar, str)}
    assert set(env) <= read, set(env) - read
    assert env["DISTRIBUTION_TOKEN"] == environment_of(services["distribution"])["DISTRIBUTION_ADMIN_TOKEN"]
    assert env["EDGE_TOKEN"] == environment_of(services["edge-1"])["EDGE_ADMIN_TOKEN"]
    assert env["EDGE_TOKEN"] == environment_of(services["edge-2"])["EDGE_ADMIN_TOKEN"]
    command = services["setup"]["command"]
    edges = [command[i + 1] for i, arg in enumerate(command) if arg == "--edge"]
    assert edges == ["edge-1=http://edge-1:8082", "edge-2=http://edge-2:8082"]


def test_the_edges_and_the_s3_server_share_the_bucket_and_the_credentials() -> None:
    services = compose()["services"]
    s3_env = environment_of(services["s3"])
    command = services["s3"]["command"]
    for name in ("edge-1", "edge-2"):
        env = environment_of(services[name])
        assert env["EDGE_STORAGE_ACCESS_KEY_ID"] == s3_env["AWS_ACCESS_KEY_ID"]
        assert env["EDGE_STORAGE_SECRET_ACCESS_KEY"] == s3_env["AWS_SECRET_ACCESS_KEY"]
        assert f"-bucket={env['EDGE_STORAGE_BUCKET']}" in command
        assert env["EDGE_STORAGE_ENDPOINT_URL"] == "http://s3:8333" and "-s3.port=8333" in command


def test_the_s3_server_uses_only_flags_weed_mini_knows_and_never_phones_home() -> None:
    command = compose()["services"]["s3"]["command"]
    assert command[0] == "mini"
    usage = subprocess.run(
        [find_weed(), "mini", "-h"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    known = set(re.findall(r"^\s+-([\w.]+)", usage.stdout + usage.stderr, re.MULTILINE))
    assert "master.telemetry" in known
    given = [arg.lstrip("-").split("=", 1)[0] for arg in command[1:]]
    assert set(given) <= known, set(given) - known
    assert "-master.telemetry=false" in command


# The Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def instruction(name: str) -> list[str]:
    return [args for op, args in dockerfile() if op == name]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), args
    return parsed


def test_the_image_is_slim_python_with_gnupg_and_runs_as_a_user_that_is_not_root() -> None:
    assert instruction("FROM") == ["python:3.11-slim"]
    assert any("apt-get install" in run and " gnupg" in run for run in instruction("RUN"))
    users = instruction("USER")
    assert users and users[-1] not in ("root", "0")


def test_the_image_installs_the_dependencies_in_a_layer_before_the_code() -> None:
    steps = dockerfile()
    copy_code = steps.index(("COPY", ". ."))
    copy_cfg = steps.index(("COPY", "setup.cfg ./"))
    install_deps = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install -r" in args)
    assert copy_cfg < install_deps < copy_code
    assert any(op == "RUN" and "pip install --no-deps ." in args for op, args in steps[copy_code:])


def test_the_requirements_the_image_installs_are_exactly_the_package_dependencies(tmp_path: Path) -> None:
    run = next(r for r in instruction("RUN") if "pip install -r" in r)
    extract = run.split(">", 1)[0].strip()  # python -c "..." > requirements.txt && pip install ...
    (tmp_path / "setup.cfg").write_text((ROOT / "setup.cfg").read_text())
    argv = shlex.split(extract)
    done = subprocess.run(runnable(argv), cwd=tmp_path, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    wanted = {str(Requirement(line)) for line in done.stdout.splitlines() if line.strip()}
    declared = {
        str(r) for r in map(Requirement, importlib.metadata.requires("edge-distribution") or []) if r.marker is None
    }
    assert wanted == declared


def test_the_image_settings_are_ones_the_services_load() -> None:
    names = {m for env in instruction("ENV") for m in re.findall(r"(\w+)=", env)}
    ours = {n for n in names if n.startswith(("EDGE_", "DISTRIBUTION_"))}
    assert ours <= EDGE_SETTINGS | DISTRIBUTION_SETTINGS, ours - EDGE_SETTINGS - DISTRIBUTION_SETTINGS


def test_the_image_command_is_a_real_command() -> None:
    (cmd,) = instruction("CMD")
    done = run_help(exec_form(cmd))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_health_check_answers_for_a_live_edge_and_fails_for_a_dead_one(tmp_path: Path) -> None:
    (healthcheck,) = instruction("HEALTHCHECK")
    argv = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert argv[-1] == "http://127.0.0.1:8082"  # the port of the image's default command
    # the compose file's checks for the distribution service call the same module with its URL
    dist_check = compose()["services"]["distribution"]["healthcheck"]["test"]
    assert dist_check[1:-1] == argv[:-1] and dist_check[-1] == "http://127.0.0.1:8080"

    def check(url: str) -> int:
        return subprocess.run(runnable([*argv[:-1], url]), cwd=ROOT, capture_output=True, timeout=30).returncode

    with EdgeProcess(tmp_path / "edge") as edge:
        assert check(edge.url) == 0
    assert check(f"http://127.0.0.1:{free_port()}") == 1


def test_the_docker_build_context_keeps_what_pip_install_needs() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    needed = {"setup.cfg", "pyproject.toml", "README.md", "storage_backends", "repository", "edge", "distribution",
              "devstack"}  # fmt: skip
    assert not needed & ignored
    assert {".venv", ".run", ".git"} <= ignored
