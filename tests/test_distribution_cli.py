"""The ``distribution`` CLI against a real service process, run exactly as a release manager types it.

Files go in with curl, every command is a subprocess of the installed console script
(``DISTRIBUTION_URL``/``DISTRIBUTION_TOKEN`` from the environment, or ``--url``/``--token``),
and signatures are checked with plain ``gpg --verify`` in a GnuPG home of the test's own
that knows only the exported public key. No gpg-agent may outlive this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import find_program, service_environment
from devstack.services import SOURCE_REPO, DistributionProcess, free_port
from tests.distribution_process import (
    distribution_server_fixture,  # noqa: F401  (fixture 'distribution_server')
    run_for_test,
)
from tests.gpg_keys import KeyFactory

V1 = "/distribution/api/v1"
APP_FILES = {
    "app-1.4.0.tar.gz": b"\x1f\x8b\x08\x00 pretend this is a tarball of app 1.4.0\n",
    "app-1.4.0.tar.gz.sha256": b"not really a checksum file\n",
    "RELEASE-NOTES.md": b"# app 1.4.0\n\n- faster\n",
}
OLD_FILE = ("app/1.3.0/app-1.3.0.tar.gz", b"the previous release\n")
PATTERN = f"{SOURCE_REPO}/app/1.4.0/*"
CLI_TIMEOUT = 60


# ---------------------------------------------------------------- the user's tools


@dataclass
class Cli:
    """The ``distribution`` command as a user runs it, pointed at one service by environment variables."""

    url: str
    token: str | None

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {"DISTRIBUTION_URL": self.url}
        if self.token is not None:
            env["DISTRIBUTION_TOKEN"] = self.token
        env.update(overrides)
        # The console script's directory first on PATH, as in an activated venv.
        bin_dir = Path(find_program("distribution")).parent
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        return service_environment({**env, "PATH": path})

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_program("distribution"), *args],
            capture_output=True,
            text=True,
            env=self.environment(**(env or {})),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, f"distribution {shlex.join(args)} exited {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))

    def fails(self, *args: str, **kwargs: Any) -> str:
        """The one-line error of a command that must fail with exit status 1 and print nothing else."""
        done = self.run(*args, **kwargs)
        command = f"distribution {shlex.join(args)}"
        assert done.returncode == 1, f"{command} exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        assert "Traceback" not in done.stderr, f"{command} printed a traceback:\n{done.stderr}"
        assert done.stdout == "", f"{command} printed on stdout: {done.stdout!r}"
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), f"{command}: not one clear line: {done.stderr!r}"
        return lines[0]

    def refuses(self, *args: str, **kwargs: Any) -> str:
        """A usage error found before any request: exit status 2 and click's 'Error: Invalid value' line."""
        done = self.run(*args, **kwargs)
        command = f"distribution {shlex.join(args)}"
        assert done.returncode == 2, f"{command} exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        assert "Traceback" not in done.stderr and done.stdout == "", f"{command}: {done.stderr!r}"
        last = done.stderr.splitlines()[-1]
        assert last.startswith("Error: Invalid value for"), f"{command}: {done.stderr!r}"
        return last

    def shell(self, line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """A shell command line, redirections and all, typed in ``cwd``."""
        return subprocess.run(
            ["bash", "-c", line],
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            timeout=CLI_TIMEOUT,
        )


def cli_for(service: DistributionProcess) -> Cli:
    return Cli(service.url, service.admin_token)


def curl(*args: str) -> bytes:
    """curl as in the issue; loopback never goes through a developer's proxy."""
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--noproxy", "*", *args], capture_output=True, timeout=CLI_TIMEOUT
    )
    assert done.returncode == 0, f"curl {shlex.join(args)}: {done.stderr.decode()} {done.stdout.decode()}"
    return done.stdout


def upload(service: DistributionProcess, repo_path: str, file: Path) -> None:
    """``curl -H 'Authorization: Bearer ...' -T FILE URL``, the CI side of the issue."""
    url = f"{service.artifactory_url}/{repo_path}"
    answer = json.loads(curl("-H", f"Authorization: Bearer {service.admin_token}", "-T", str(file), url))
    assert answer["checksums"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


def rest(service: DistributionProcess, path: str) -> bytes:
    """A GET over REST with the admin token, for comparing the CLI with the API it calls."""
    return curl("-H", f"Authorization: Bearer {service.admin_token}", service.url + path)


def upload_release(service: DistributionProcess, workdir: Path) -> dict[str, bytes]:
    """app 1.4.0's three files (and one of 1.3.0 the pattern must leave out), uploaded with curl."""
    workdir.mkdir(exist_ok=True)
    for name, data in APP_FILES.items():
        (workdir / name).write_bytes(data)
        upload(service, f"{SOURCE_REPO}/app/1.4.0/{name}", workdir / name)
    old = workdir / Path(OLD_FILE[0]).name
    old.write_bytes(OLD_FILE[1])
    upload(service, f"{SOURCE_REPO}/{OLD_FILE[0]}", old)
    return {f"{SOURCE_REPO}/app/1.4.0/{name}": data for name, data in APP_FILES.items()}


# ---------------------------------------------------------------- plain gpg, and no agent left behind


class Verifier:
    """A GnuPG home of its own that trusts only the keys imported into it; never starts an agent."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700)
        self.home = home
        self.base = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart", "--status-fd", "1"]

    def import_key(self, armored_file: Path) -> None:
        done = subprocess.run([*self.base, "--import", str(armored_file)], capture_output=True, timeout=CLI_TIMEOUT)
        assert done.returncode == 0, done.stderr.decode()
        assert b"IMPORT_OK" in done.stdout and b"IMPORT_RES" in done.stdout

    def verify(self, signature: bytes, data: bytes) -> tuple[int, str]:
        """``gpg --verify sig data``: exit code and status lines."""
        (self.home / "check.asc").write_bytes(signature)
        (self.home / "check.data").write_bytes(data)
        done = subprocess.run(
            [*self.base, "--verify", str(self.home / "check.asc"), str(self.home / "check.data")],
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )
        return done.returncode, done.stdout.decode(errors="replace")

    def signer(self, signature: bytes, data: bytes) -> str:
        """The full fingerprint of a good signature (VALIDSIG), failing the test otherwise."""
        code, status = self.verify(signature, data)
        assert code == 0, status
        validsig = [line.split() for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
        assert len(validsig) == 1, status
        return validsig[0][2]

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, timeout=30)


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[Verifier]:
    v = Verifier(tmp_path / "verify-home")
    try:
        yield v
    finally:
        v.close()


def gpg_agents_under(*roots: Path) -> dict[int, str]:
    """Running gpg-agents of this user whose GnuPG home lies under one of ``roots``: pid -> home.

    Only agents in homes these tests made are ever looked at (or stopped): any other
    gpg-agent on the machine, a developer's or another test run's, is none of ours.
    """
    resolved = [root.resolve() for root in roots]
    agents: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != os.getuid() or (proc / "comm").read_text().strip() != "gpg-agent":
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not yet reaped
                continue
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it exited while we looked
            continue
        home = args[args.index("--homedir") + 1] if "--homedir" in args[:-1] else None
        if home is None:
            continue
        real = Path(os.path.realpath(home))
        if any(real == root or root in real.parents for root in resolved):
            agents[int(proc.name)] = home
    return agents


def assert_no_agent_left(*roots: Path, ignore: AbstractSet[int] = frozenset(), grace: float = 5.0) -> None:
    """No gpg-agent remains in a home under ``roots`` (after ``grace`` s); stop any that do, and fail."""
    deadline = time.monotonic() + grace
    while (left := {p: h for p, h in gpg_agents_under(*roots).items() if p not in ignore}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    for pid in left:  # started by these tests: do not leave them running, but say so
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert not left, f"gpg-agents left running by these tests: {left}"


@pytest.fixture
def key_maker() -> Iterator[KeyFactory]:
    """Keys made with plain gpg in their own homes, whose agents are stopped after the test."""
    factory = KeyFactory()
    try:
        yield factory
    finally:
        factory.close()
        assert_no_agent_left(factory.root)


@pytest.fixture(scope="module", autouse=True)
def no_gpg_agent_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every service and verifier home of this module is under pytest's temp root: none keeps an agent."""
    root = tmp_path_factory.getbasetemp()
    earlier = set(gpg_agents_under(root))  # another module's, still running: not this module's to judge
    yield
    assert_no_agent_left(root, ignore=earlier)


# ---------------------------------------------------------------- the issue's flow


def test_the_issue_flow_makes_a_bundle_that_plain_gpg_verifies(
    distribution_server: DistributionProcess, verifier: Verifier, tmp_path: Path
) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    files = upload_release(service, tmp_path / "build")

    summary = cli.ok("bundle", "create", "app", "1.4.0", "--pattern", PATTERN, "--sign")
    first = summary.splitlines()[0]
    assert first.startswith("app 1.4.0  SIGNED  3 files") and "signed by" in first, summary
    manifest = rest(service, f"{V1}/release_bundle/app/1.4.0/manifest")
    assert f"manifest sha256 {hashlib.sha256(manifest).hexdigest()}" in summary

    shown = cli.ok("bundle", "show", "app", "1.4.0")
    for path in files:
        assert path in shown, shown
    assert OLD_FILE[0] not in shown
    assert "app 1.4.0  SIGNED  3 files" in cli.ok("bundle", "list")
    assert "app 1.4.0  SIGNED" in cli.ok("bundle", "list", "app")

    exported = cli.shell("distribution keys export > distribution-public.asc", cwd=tmp_path)
    assert exported.returncode == 0 and exported.stderr == "", exported.stderr
    public = (tmp_path / "distribution-public.asc").read_text()
    assert public.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----") and "PRIVATE" not in public
    verifier.import_key(tmp_path / "distribution-public.asc")

    signature = rest(service, f"{V1}/release_bundle/app/1.4.0/signature")
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    default_key = next(k for k in cli.json("keys", "list")["keys"] if k["default"])
    assert verifier.signer(signature, manifest) == default_key["fingerprint"]
    assert cli.json("bundle", "show", "app", "1.4.0")["signed_by"] == default_key["fingerprint"]

    # The manifest names every file by its sha256: what was uploaded is what is signed.
    decoded = json.loads(manifest)
    assert {a["target"]: a["sha256"] for a in decoded["artifacts"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in files.items()
    }

    flipped = bytearray(manifest)
    flipped[len(flipped) // 2] ^= 0x01
    code, status = verifier.verify(signature, bytes(flipped))
    assert code != 0 and "BADSIG" in status, status
    sha = decoded["artifacts"][0]["sha256"]
    other = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    code, status = verifier.verify(signature, manifest.replace(sha.encode(), other.encode()))
    assert code != 0 and "BADSIG" in status, status


def test_json_output_is_the_rest_answer(distribution_server: DistributionProcess, tmp_path: Path) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    files = upload_release(service, tmp_path / "build")

    created = cli.json("bundle", "create", "app", "1.4.0", "--pattern", PATTERN, "--description", "first")
    assert created["state"] == "OPEN" and created["description"] == "first"
    assert created["artifacts_count"] == 3 and created["artifacts_size"] == sum(map(len, files.values()))
    assert sorted(a["targetRepoPath"] for a in created["artifacts"]) == sorted(files)
    assert created == json.loads(rest(service, f"{V1}/release_bundle/app/1.4.0"))

    signed = cli.json("bundle", "sign", "app", "1.4.0")
    manifest = rest(service, f"{V1}/release_bundle/app/1.4.0/manifest")
    assert signed["state"] == "SIGNED" and signed["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()

    assert cli.json("bundle", "show", "app", "1.4.0") == json.loads(rest(service, f"{V1}/release_bundle/app/1.4.0"))
    listed = cli.json("bundle", "list")
    assert listed == json.loads(rest(service, f"{V1}/release_bundle"))
    assert [(b["name"], b["version"], b["state"]) for b in listed] == [("app", "1.4.0", "SIGNED")]
    keys = cli.json("keys", "list")
    assert keys == json.loads(rest(service, f"{V1}/keys/gpg"))
    assert [k["default"] for k in keys["keys"]] == [True]
    assert cli.json("repo", "list") == json.loads(rest(service, "/artifactory/api/repositories"))

    # Flags win over the environment, and work without it.
    bare = Cli("http://127.0.0.1:1", "wrong-token")
    via_flags = bare.json("bundle", "list", "--url", service.url, "--token", service.admin_token)
    assert via_flags == listed


def test_bundles_are_listed_past_one_page(distribution_server: DistributionProcess, tmp_path: Path) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    upload_release(service, tmp_path / "build")
    versions = [f"1.4.{n}" for n in range(12)]  # the API answers 10 a page
    for version in versions:
        cli.ok("bundle", "create", "app", version, "--pattern", PATTERN)
    assert sorted(b["version"] for b in cli.json("bundle", "list")) == sorted(versions)
    assert len(cli.ok("bundle", "list", "app").splitlines()) == 12
    cli.ok("bundle", "delete", "app", "1.4.0")
    assert "1.4.0" not in {b["version"] for b in cli.json("bundle", "list", "app")}
    assert "404" in cli.fails("bundle", "show", "app", "1.4.0")


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DistributionProcess, Cli]]:
    """One service for the error cases: app 1.4.0 signed, app 1.6.0 open, the same three files."""
    base = tmp_path_factory.mktemp("released")
    for service in run_for_test(DistributionProcess(base / "distribution")):
        cli = cli_for(service)
        upload_release(service, base / "build")
        cli.ok("bundle", "create", "app", "1.4.0", "--pattern", PATTERN, "--sign")
        cli.ok("bundle", "create", "app", "1.6.0", "--pattern", PATTERN)
        yield service, cli


def state_of(service: DistributionProcess) -> dict[str, bytes]:
    """Everything a failed command must leave as it was, read over REST."""
    paths = [
        f"{V1}/release_bundle",
        f"{V1}/release_bundle/app/1.4.0",
        f"{V1}/release_bundle/app/1.4.0/manifest",
        f"{V1}/release_bundle/app/1.4.0/signature",
        f"{V1}/release_bundle/app/1.6.0",
        f"{V1}/keys/gpg",
        "/artifactory/api/repositories",
    ]
    return {path: rest(service, path) for path in paths}


NOT_RUNNING = "<a free port>"
CREATE_OTHER_CONTENT = ["bundle", "create", "app", "1.4.0", "--pattern", f"{SOURCE_REPO}/app/**"]
ERRORS = [
    pytest.param(
        ["bundle", "create", "app", "1.5.0", "--pattern", f"{SOURCE_REPO}/nothing/*"],
        {},
        "Error: 400: spec matches no artifacts",
        id="pattern-matching-nothing",
    ),
    pytest.param(
        ["bundle", "create", "app", "1.5.0", "--pattern", "no-such-repo/app/*"],
        {},
        "Error: 400:",
        id="pattern-in-unknown-repo",
    ),
    pytest.param(
        CREATE_OTHER_CONTENT, {}, "Error: 409: Release bundle app/1.4.0 already exists with other content", id="409"
    ),
    pytest.param(
        ["bundle", "show", "app", "9.9"], {}, "Error: 404: Release bundle app/9.9 not found", id="unknown-bundle"
    ),
    pytest.param(["bundle", "list", "--token", "wrong"], {}, "Error: 401:", id="wrong-token-flag"),
    pytest.param(
        ["bundle", "delete", "app", "1.6.0"], {"DISTRIBUTION_TOKEN": "wrong"}, "Error: 401:", id="wrong-token"
    ),
    pytest.param(
        ["bundle", "create", *CREATE_OTHER_CONTENT[2:]], {"DISTRIBUTION_TOKEN": ""}, "Error: 401:", id="no-token"
    ),
    pytest.param(
        ["bundle", "list"], {"DISTRIBUTION_URL": NOT_RUNNING}, "Error: cannot reach http://127.0.0.1:", id="not-running"
    ),
    pytest.param(
        ["bundle", "update", "app", "1.4.0", "--pattern", f"{SOURCE_REPO}/app/1.4.0/RELEASE-NOTES.md"],
        {},
        "Error: 409: Release bundle app/1.4.0 is signed and cannot change",
        id="update-signed",
    ),
    pytest.param(
        ["bundle", "sign", "app", "1.6.0", "--signing-key", "nope"],
        {},
        "No signing key with alias 'nope'",
        id="sign-with-unknown-key",
    ),
    pytest.param(
        ["bundle", "sign", "app", "1.4.0", "--signing-key", "nope"],
        {},
        "No signing key with alias 'nope'",
        id="sign-signed-with-unknown-key",
    ),
    pytest.param(["bundle", "sign", "app", "9.9"], {}, "Error: 404:", id="sign-unknown-bundle"),
    pytest.param(
        ["keys", "export", "--alias", "nope"], {}, "No signing key with alias 'nope'", id="export-unknown-key"
    ),
    pytest.param(
        ["bundle", "create", "app", "1.7.0", "--pattern", PATTERN, "--sign", "--signing-key", "nope"],
        {},
        "No signing key with alias 'nope'",
        id="create-and-sign-with-unknown-key",
    ),
    pytest.param(
        [
            "bundle",
            "update",
            "app",
            "1.6.0",
            "--pattern",
            f"{SOURCE_REPO}/app/1.4.0/RELEASE-NOTES.md",
            "--sign",
            "--signing-key",
            "nope",
        ],
        {},
        "No signing key with alias 'nope'",
        id="update-and-sign-with-unknown-key",
    ),
]


@pytest.mark.parametrize(("args", "env", "message"), ERRORS)
def test_every_error_is_one_clear_line_and_changes_nothing(
    released: tuple[DistributionProcess, Cli], args: list[str], env: dict[str, str], message: str
) -> None:
    service, cli = released
    if env.get("DISTRIBUTION_URL") == NOT_RUNNING:
        env = {**env, "DISTRIBUTION_URL": f"http://127.0.0.1:{free_port()}"}
    before = state_of(service)
    line = cli.fails(*args, env=env)
    assert message in line
    assert state_of(service) == before


# NAME, VERSION and repo keys become part of URLs, so the CLI checks them by the server's rules
# first: a '/' or '..' in them must never reach another endpoint.
PATHS_IN_NAMES = [
    pytest.param(["bundle", "create", "bad name", "1.0", "--pattern", PATTERN], "bundle name", id="bad-bundle-name"),
    pytest.param(
        ["bundle", "create", "app", "1.0/../x", "--pattern", PATTERN], "bundle version", id="bad-bundle-version"
    ),
    pytest.param(
        ["bundle", "show", "app", "1.4.0/signature"],
        "bundle version",
        id="show-reaches-the-signature",
    ),
    pytest.param(
        ["bundle", "list", "app/1.4.0"],
        "bundle name",
        id="list-of-one-bundle",
    ),
    pytest.param(
        ["repo", "create", "bad/key"],
        "Invalid repository key",
        id="repo-key-with-a-slash",
    ),
    pytest.param(
        ["bundle", "show", "app", ".."],
        "bundle version",
        id="show-dot-dot",
    ),
]


@pytest.mark.parametrize(("args", "message"), PATHS_IN_NAMES)
def test_names_are_never_read_as_paths(
    released: tuple[DistributionProcess, Cli], args: list[str], message: str
) -> None:
    service, cli = released
    before = state_of(service)
    assert message in cli.refuses(*args, timeout=5)
    assert state_of(service) == before


def test_delete_deletes_only_the_bundle_it_names(released: tuple[DistributionProcess, Cli]) -> None:
    _, cli = released
    cli.ok("bundle", "create", "app", "1.6.1", "--pattern", PATTERN)
    try:
        assert "bundle version" in cli.refuses("bundle", "delete", "app", "1.6.0/../1.6.1")
        assert cli.json("bundle", "show", "app", "1.6.1")["state"] == "OPEN"
    finally:
        cli.run("bundle", "delete", "app", "1.6.1")


def test_usage_errors_say_what_is_missing(released: tuple[DistributionProcess, Cli]) -> None:
    _, cli = released
    done = cli.run("bundle", "create", "app", "2.0")
    assert done.returncode == 2 and "give --pattern or --aql (one or more of either) or --spec FILE" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_public_key_is_refused_as_a_signing_key(released: tuple[DistributionProcess, Cli], tmp_path: Path) -> None:
    service, cli = released
    public = tmp_path / "public.asc"
    public.write_text(cli.ok("keys", "export"))
    before = state_of(service)
    line = cli.fails("keys", "upload", "--alias", "pub", str(public))
    assert line == "Error: 400: This is a public key only; signing needs the private key"
    assert state_of(service) == before


# ---------------------------------------------------------------- repos and keys


def test_a_created_repo_takes_uploads_and_is_listed(distribution_server: DistributionProcess, tmp_path: Path) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    assert cli.ok("repo", "create", "libs-local", "--description", "shared libraries").strip() == "libs-local"
    lib = tmp_path / "libfoo-2.1.so"
    lib.write_bytes(b"\x7fELF not really\n")
    upload(service, "libs-local/foo/2.1/libfoo-2.1.so", lib)
    assert (
        curl(
            f"{service.artifactory_url}/libs-local/foo/2.1/libfoo-2.1.so",
            "-H",
            f"Authorization: Bearer {service.admin_token}",
        )
        == lib.read_bytes()
    )
    listed = cli.ok("repo", "list").splitlines()
    assert listed == ["libs-local  LOCAL  generic", f"{SOURCE_REPO}  LOCAL  generic"]
    assert {r["key"]: r["description"] for r in cli.json("repo", "list")}["libs-local"] == "shared libraries"
    # A bundle can take files from both repos.
    upload_release(service, tmp_path / "build")
    created = cli.json("bundle", "create", "app", "1.4.0", "--pattern", PATTERN, "--pattern", "libs-local/foo/**")
    assert created["artifacts_count"] == 4


def test_an_uploaded_key_signs_by_alias(
    distribution_server: DistributionProcess, key_maker: KeyFactory, verifier: Verifier, tmp_path: Path
) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    second = key_maker.make_key("Second Release Key <second@example.com>")
    key_file = tmp_path / "key.asc"
    key_file.write_text(second.private)

    assert cli.ok("keys", "upload", "--alias", "second", str(key_file)).split() == ["second", second.fingerprint]
    listed = cli.json("keys", "list")["keys"]
    assert {k["alias"]: k["default"] for k in listed} == {"default": True, "second": False}
    assert {k["alias"]: k["fingerprint"] for k in listed}["second"] == second.fingerprint
    assert all("PRIVATE" not in k["public_key"] for k in listed)
    human = cli.ok("keys", "list").splitlines()
    assert len(human) == 2 and sum(line.endswith("(default)") for line in human) == 1
    assert f"second  {second.fingerprint}  ed25519" in human

    upload_release(service, tmp_path / "build")
    cli.ok("bundle", "create", "app", "2.0", "--pattern", PATTERN, "--sign", "--signing-key", "second")
    shown = cli.json("bundle", "show", "app", "2.0")
    assert shown["state"] == "SIGNED" and shown["signed_by"] == second.fingerprint

    # Plain gpg with only the second key's public half (as exported by the service) agrees.
    (tmp_path / "second.asc").write_text(cli.ok("keys", "export", "--alias", "second"))
    verifier.import_key(tmp_path / "second.asc")
    manifest = rest(service, f"{V1}/release_bundle/app/2.0/manifest")
    signature = rest(service, f"{V1}/release_bundle/app/2.0/signature")
    assert verifier.signer(signature, manifest) == second.fingerprint

    # Signed is final: not again with the other key, not under the same alias twice.
    assert "already signed with another key" in cli.fails("bundle", "sign", "app", "2.0")
    assert "409" in cli.fails("keys", "upload", "--alias", "second", str(key_file))
    assert cli.ok("bundle", "sign", "app", "2.0", "--signing-key", "second").startswith("app 2.0  SIGNED")


# ---------------------------------------------------------------- restart


def test_a_restart_keeps_bundles_signatures_and_the_default_key(
    distribution_server: DistributionProcess, verifier: Verifier, tmp_path: Path
) -> None:
    service, cli = distribution_server, cli_for(distribution_server)
    upload_release(service, tmp_path / "build")
    cli.ok("bundle", "create", "app", "1.4.0", "--pattern", PATTERN, "--sign")
    cli.ok("bundle", "create", "app", "1.5.0", "--pattern", PATTERN)
    before = {
        "bundles": cli.json("bundle", "list"),
        "shown": cli.json("bundle", "show", "app", "1.4.0"),
        "manifest": rest(service, f"{V1}/release_bundle/app/1.4.0/manifest"),
        "signature": rest(service, f"{V1}/release_bundle/app/1.4.0/signature"),
        "keys": cli.json("keys", "list"),
        "public": cli.ok("keys", "export"),
    }

    assert service.stop() == 0, service.log_tail()
    cli.fails("bundle", "list")  # really stopped
    service.start()
    cli = cli_for(service)

    after = {
        "bundles": cli.json("bundle", "list"),
        "shown": cli.json("bundle", "show", "app", "1.4.0"),
        "manifest": rest(service, f"{V1}/release_bundle/app/1.4.0/manifest"),
        "signature": rest(service, f"{V1}/release_bundle/app/1.4.0/signature"),
        "keys": cli.json("keys", "list"),
        "public": cli.ok("keys", "export"),
    }
    assert after == before
    default = next(k["fingerprint"] for k in after["keys"]["keys"] if k["default"])
    # The key kept across the restart still signs, and old and new signatures verify with the same export.
    signed = cli.json("bundle", "sign", "app", "1.5.0")
    assert signed["signed_by"] == default
    (tmp_path / "public.asc").write_text(after["public"])
    verifier.import_key(tmp_path / "public.asc")
    assert verifier.signer(before["signature"], before["manifest"]) == default
    manifest = rest(service, f"{V1}/release_bundle/app/1.5.0/manifest")
    assert verifier.signer(rest(service, f"{V1}/release_bundle/app/1.5.0/signature"), manifest) == default
