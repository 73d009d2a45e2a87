"""Access pipeline benchmark: what address, IP and geo rules, identity and audit cost per request.

Run by hand (``python bench/access.py``, ``--quick`` for a short run); it is not part of
the test suite. Real ``edge serve`` processes serve the same 4 KiB file (small files are
where per-request work shows), and five scenarios are measured in alternating rounds of
the same run:

- **all off**: ``[audit] enabled = false``, no ``[access]`` settings, anonymous read: the
  baseline (the pipeline still finds the client address and the repo, with nothing to apply);
- **audit only**: the default audit trail (one record per request, written in batches),
  anonymous;
- **all on, token**: behind a trusted proxy with ``X-Forwarded-For`` of two hops to walk, a
  geo database (a real .mmdb), a global IP rule and a per-repo rule with IP and country allow
  and deny lists, a Bearer token, audit on;
- **all on, signed URL**: the same edge, a signed URL (bound to the client's network) in
  place of the token;
- **all on, basic + 200 targets**: an edge set up as the previous one plus 200 permission
  targets, 20 of them covering the file; a user with basic auth reads through a group grant.

Load comes from wrk (one thread, 32 connections), with a warm-up before each measurement;
rounds alternate the order of the scenarios so that drift on the machine hits all alike.
Two figures per scenario, medians over the rounds: requests/s, and the edge process's own
CPU time per request (utime + stime from /proc over the measured seconds, divided by the
requests answered). The second is what the pipeline costs and moves little when other
processes share the machine; the first is what a client sees on this machine right now.

Before measuring, each scenario must serve the right bytes, and on the "all on" edges the
same request from a denied network must get a 403 (and a token without the group grant a
403 where the targets cover the file). Afterwards each edge's audit trail must hold one
download record per request answered (none on the edge with audit off). Everything listens
on 127.0.0.1 only and is removed on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import BenchError, run_bench  # bench/ is no package: its folder is the script's, on sys.path
from distribute import cpu_seconds
from download import (
    SERVER_CPU,
    WRK_REPORT,
    PinnedEdge,
    Result,
    can_pin,
    client_cpus,
    connect,
    run_wrk,
    start_node,
)

KiB = 1024
UPLOADS_REPO = "artifactory-edge-uploads"
FILE_PATH = f"{UPLOADS_REPO}/bench/small.bin"
PASSWORD = "bench-password-" + os.urandom(6).hex()
CONNECTIONS = 32
TARGETS, TARGETS_ON_REPO = 200, 20
# The client as a trusted proxy reports it: an allowed network and country, behind two proxies.
FORWARDED = "198.51.100.7, 10.20.30.40"
DENIED = "192.0.2.5, 10.20.30.40"  # a network no allow list names, in a country the rules refuse
AUDIT_OFF = "[audit]\nenabled = false\n"
RULES_ON = """\
[access]
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
geoip_database = "{geo}"
geo_unknown = "deny"
[[access.rules]]
deny_cidrs = [{deny}]
[[access.rules]]
repos = ["releases-*", "artifactory-edge-*"]
allow_cidrs = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]
deny_cidrs = ["203.0.113.0/24"]
allow_countries = ["US", "CA", "DE"]
deny_countries = ["KP"]
"""


@dataclass(frozen=True)
class Timing:
    rounds: int
    seconds: int
    warmup: int


FULL, QUICK = Timing(rounds=3, seconds=8, warmup=2), Timing(rounds=2, seconds=3, warmup=1)


@dataclass
class Edge:
    """One edge process, and the requests the load answered there (for the audit check)."""

    name: str
    process: PinnedEdge
    audit: bool
    answered: int = 0
    loads: int = 0

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port


@dataclass(frozen=True)
class Scenario:
    name: str
    edge: Edge
    path: str
    headers: dict[str, str]
    rules: bool  # the edge applies the IP and geo rules: a denied network must get a 403


@dataclass(frozen=True)
class Run:
    result: Result
    cpu_seconds: float  # of the edge process, over the measured seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.result.requests, 1) * 1e6


# ---------------------------------------------------------------- the edges


def start_edge(stack: contextlib.ExitStack, tmp: Path, name: str, config: str, *, audit: bool = True) -> Edge:
    slug = name.replace(" ", "-")
    (tmp / slug).mkdir()
    (tmp / slug / "edge.toml").write_text(config)
    process = start_node(stack, PinnedEdge(tmp / slug, config=tmp / slug / "edge.toml"))
    return Edge(name, process, audit)


def write_geo_database(path: Path) -> None:
    try:
        from devstack.mmdb import write_mmdb
    except ImportError as exc:
        raise BenchError(f"{exc}: install the test extra (pip install -e '.[test]') for mmdb-writer") from None
    write_mmdb(path)


def request(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    with connect(port, timeout=30) as conn:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()


def admin(edge: Edge, method: str, path: str, body: object = None, raw: bytes | None = None) -> bytes:
    """An admin call from the allowed client (the rules cover uploads and API calls too)."""
    headers = {"Authorization": f"Bearer {edge.process.admin_token}", "X-Forwarded-For": FORWARDED}
    if body is not None:
        headers["Content-Type"] = "application/json"
        raw = json.dumps(body).encode()
    status, answer = request(edge.port, method, path, headers, raw)
    if status not in (200, 201):
        raise BenchError(f"edge ({edge.name}): {method} {path} answered {status}: {answer[:300]!r}")
    return answer


def reader_token(edge: Edge) -> str:
    answer = admin(edge, "POST", "/access/api/v1/tokens", {"username": "svc", "role": "reader"})
    return str(json.loads(answer)["access_token"])


def signed_path(edge: Edge) -> str:
    body = {"repo_path": f"/{FILE_PATH}", "valid_for_secs": 3600, "client_cidr": "198.51.100.0/24"}
    url = admin(edge, "POST", "/artifactory/api/signed/url", body).decode()
    return url[url.index("/artifactory/") :]


def add_user_and_targets(edge: Edge) -> str:
    """User 'bench' in group 'bench', and the targets: only the first grants the group; answers
    the basic auth header. A reader token, which the targets do not name, is then refused."""
    admin(edge, "PUT", "/artifactory/api/security/users/bench", {"password": PASSWORD, "groups": ["bench"]})
    for i in range(TARGETS):
        repos = [UPLOADS_REPO] if i < TARGETS_ON_REPO else [f"other-{i}"]
        grant = {"groups": {"bench": ["read"]}} if i == 0 else {"users": {f"u{i}": ["read", "write"]}}
        body = {"repo": {"repositories": repos, "include-patterns": ["bench/**"], "actions": grant}}
        admin(edge, "PUT", f"/artifactory/api/v2/security/permissions/t{i:03}", body)
    headers = {"Authorization": f"Bearer {reader_token(edge)}", "X-Forwarded-For": FORWARDED}
    status, _ = request(edge.port, "GET", f"/artifactory/{FILE_PATH}", headers)
    if status != 403:
        raise BenchError(f"edge ({edge.name}): a reader the targets do not name got {status}, not 403")
    return "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()


def setup(stack: contextlib.ExitStack, tmp: Path, data: bytes) -> list[Scenario]:
    """Start the four edges, upload the file to each, and describe the five scenarios."""
    geo = tmp / "GeoLite2-Country.mmdb"
    write_geo_database(geo)
    deny = ", ".join(f'"100.{i}.0.0/16"' for i in range(64, 84))
    rules = RULES_ON.format(geo=geo, deny=deny)
    off = start_edge(stack, tmp, "all off", AUDIT_OFF, audit=False)
    audit = start_edge(stack, tmp, "audit only", "")
    on = start_edge(stack, tmp, "all on", rules)
    targets = start_edge(stack, tmp, "all on + targets", rules)
    for edge in (off, audit, on, targets):
        admin(edge, "PUT", f"/artifactory/{FILE_PATH}", raw=data)
    path, forwarded = f"/artifactory/{FILE_PATH}", {"X-Forwarded-For": FORWARDED}
    token = {"Authorization": f"Bearer {reader_token(on)}"}
    basic = {"Authorization": add_user_and_targets(targets)}
    return [
        Scenario("all off", off, path, {}, rules=False),
        Scenario("audit only", audit, path, {}, rules=False),
        Scenario("all on, token", on, path, forwarded | token, rules=True),
        Scenario("all on, signed URL", on, signed_path(on), forwarded, rules=True),
        Scenario("all on, basic + 200 targets", targets, path, forwarded | basic, rules=True),
    ]


def check(scenario: Scenario, data: bytes) -> None:
    """The right bytes, and where rules apply, a 403 for the same request from a denied network."""
    status, body = request(scenario.edge.port, "GET", scenario.path, scenario.headers)
    if status != 200 or body != data:
        raise BenchError(f"{scenario.name}: answered {status} with {len(body)} bytes")
    if scenario.rules:
        status, _ = request(scenario.edge.port, "GET", scenario.path, scenario.headers | {"X-Forwarded-For": DENIED})
        if status != 403:
            raise BenchError(f"{scenario.name}: a client from a denied network got {status}, not 403")


# ---------------------------------------------------------------- load and figures


def wrk_script(path: Path, headers: dict[str, str]) -> Path:
    """download.py's report script, plus the scenario's headers (wrk sends wrk.headers with every
    request). The values are ASCII, so a JSON string is also a Lua string."""
    lines = [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n" for name, value in headers.items()]
    path.write_text("".join(lines) + WRK_REPORT)
    return path


def load(scenario: Scenario, script: Path, seconds: int) -> Result:
    result = run_wrk(f"http://127.0.0.1:{scenario.edge.port}{scenario.path}", CONNECTIONS, seconds, script)
    scenario.edge.answered += result.requests
    scenario.edge.loads += 1
    return result


def measure(scenarios: list[Scenario], scripts: dict[str, Path], timing: Timing) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {s.name: [] for s in scenarios}
    for round_no in range(1, timing.rounds + 1):
        for scenario in scenarios if round_no % 2 else reversed(scenarios):
            print(f"round {round_no}/{timing.rounds}: {scenario.name} ...", flush=True)
            load(scenario, scripts[scenario.name], timing.warmup)
            before = cpu_seconds(scenario.edge.process.pid)
            result = load(scenario, scripts[scenario.name], timing.seconds)
            runs[scenario.name].append(Run(result, cpu_seconds(scenario.edge.process.pid) - before))
    return runs


def print_table(runs: dict[str, list[Run]]) -> None:
    rps = {name: statistics.median(r.result.rps for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r.cpu_us_per_request for r in rs) for name, rs in runs.items()}
    base = next(iter(runs))
    head = (
        f"{'scenario':<28} {'req/s':>7} {'vs off':>6} {'CPU us/req':>10} {'+us/req':>7} {'errors':>6}"
        "  each round: req/s | CPU us/req"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name, rs in runs.items():
        errors = sum(r.result.errors for r in rs)
        rounds = ", ".join(f"{r.result.rps:.0f}" for r in rs) + " | "
        rounds += ", ".join(f"{r.cpu_us_per_request:.0f}" for r in rs)
        print(
            f"{name:<28} {rps[name]:7.0f} {rps[name] / rps[base]:6.2f} {cpu[name]:10.1f}"
            f" {cpu[name] - cpu[base]:+7.1f} {errors:6d}  {rounds}"
        )
    print(f"medians over the rounds; 'vs off' and '+us/req' against {base!r}; CPU is the edge process's own")
    if any(r.result.errors for rs in runs.values() for r in rs):
        raise BenchError("some requests failed (non-2xx or socket errors): the figures above are not comparable")


# ---------------------------------------------------------------- the audit trail


def download_records(edge: Edge, since_ms: int) -> int:
    """Download records the edge wrote since ``since_ms``, once its batched writes have settled."""
    db = f"file:{edge.process.data_dir / 'catalog.db'}?mode=ro"
    query = "SELECT count(*) FROM audit WHERE action = 'download' AND time >= ?"
    counts: list[int] = []
    deadline = time.monotonic() + 15
    with contextlib.closing(sqlite3.connect(db, uri=True, timeout=30)) as conn:
        while len(counts) < 5 or len(set(counts[-5:])) > 1:  # the same count for 1 s: two flush intervals
            if time.monotonic() > deadline:
                raise BenchError(f"edge ({edge.name}): the audit trail kept growing: {counts[-5:]}")
            counts.append(int(conn.execute(query, (since_ms,)).fetchone()[0]))
            time.sleep(0.25)
    return counts[-1]


def check_audit(edges: list[Edge], since_ms: int) -> None:
    """One record per answered request; wrk may also leave up to one request per connection
    in flight when a load ends, which the edge answers (and records) but wrk does not count."""
    print("\naudit trail: download records written during the loads")
    wrong = []
    for edge in edges:
        written = download_records(edge, since_ms)
        most = edge.answered + CONNECTIONS * edge.loads if edge.audit else 0
        least = edge.answered if edge.audit else 0
        in_flight = f" (+{written - least} in flight as a load ended)" if written > least else ""
        print(f"  {edge.name:<18} {written:9,d} for {edge.answered:9,d} answered requests{in_flight}")
        if not least <= written <= most:
            wrong.append(f"{edge.name}: {written} records, expected {least} to {most}")
    if wrong:
        raise BenchError("audit trail does not match the requests: " + "; ".join(wrong))


# ---------------------------------------------------------------- the run


def run(timing: Timing) -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk (make bench installs it)")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="edge-access-bench-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        data = os.urandom(4 * KiB)
        scenarios = setup(stack, tmp, data)
        for scenario in scenarios:
            check(scenario, data)
        scripts = {s.name: wrk_script(tmp / f"wrk-{i}.lua", s.headers) for i, s in enumerate(scenarios)}
        edges = list({id(s.edge): s.edge for s in scenarios}.values())
        time.sleep(0.1)  # the checks' records are all older than since_ms
        since_ms = time.time_ns() // 1_000_000
        pinned = f"edges on CPU {SERVER_CPU}, wrk on CPUs {client_cpus()}" if can_pin() else "not pinned"
        print(f"4 KiB file; wrk, 1 thread, {CONNECTIONS} connections, {timing.seconds} s after {timing.warmup} s")
        print(f"{os.cpu_count()} CPUs, {pinned}; {timing.rounds} rounds, scenarios alternating")
        print_table(measure(scenarios, scripts, timing))
        check_audit(edges, since_ms)
    print(f"\ntotal wall time: {time.monotonic() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rounds} rounds of {QUICK.seconds} s (default: {FULL.rounds} of {FULL.seconds} s)",
    )
    args = parser.parse_args()
    run_bench(lambda: run(QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
