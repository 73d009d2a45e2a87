"""What the agent is made of and how it is configured: only the wire contract and psutil
on a device, settings checked at start, the bandwidth cap, backoff and jitter arithmetic."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bandwidth import TokenBucket
from agent.installer import placed
from agent.loop import Backoff, poll_delay
from agent.settings import SettingError, load_settings
from tests.agent_plane import exit_of, start_agent
from wire.fleet import Action, ActionKind, AppSpec

ALLOWED = {"agent", "wire", "gnupg", "psutil"}


def test_the_agent_imports_nothing_but_the_standard_library_the_wire_contract_gnupg_and_psutil() -> None:
    code = (
        "import sys, json, agent.cli, agent.loop, agent.flow, agent.download;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(done.stdout))
    foreign = {m for m in loaded - ALLOWED if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert foreign == set()
    assert {"agent", "wire", "psutil"} <= loaded


def test_settings_come_from_agent_toml_then_flags(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("bandwidth_limit = 1000\njitter = 0.2\nmax_backoff = 60\n")
    settings = load_settings(tmp_path, {"max_backoff": 30, "jitter": None})
    assert (settings.bandwidth_limit, settings.jitter, settings.max_backoff) == (1000, 0.2, 30)
    assert load_settings(tmp_path / "none").bandwidth_limit == 0


def test_install_root_places_every_apps_install_dir_under_it(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('install_root = "roots/a"\n')
    settings = load_settings(tmp_path, {})
    assert settings.install_root == Path("roots/a").absolute()
    assert load_settings(tmp_path, {"install_root": str(tmp_path / "b")}).install_root == tmp_path / "b"
    assert load_settings(tmp_path / "none").install_root is None
    action = Action("a1", ActionKind.INSTALL, "7", AppSpec("till", "till-app", "/opt/till"), "2.3.0")
    assert placed(action, tmp_path / "b").app.install_dir == str(tmp_path / "b" / "opt" / "till")
    assert placed(action, tmp_path / "b").app.name == "till"
    assert placed(action, None) == action


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bandwith_limit = 10\n", "bandwith_limit"),  # a typo is refused, not ignored
        ('jitter = "0.1"\n', "jitter"),
        ("jitter = 0.51\n", "jitter"),
        ("jitter = -0.01\n", "jitter"),
        ("max_backoff = 0\n", "max_backoff"),
        ("bandwidth_limit = -1\n", "bandwidth_limit"),
        ("hook_timeout = true\n", "hook_timeout"),
        ('ca_file = "/nonexistent/ca.pem"\n', "ca_file"),
        ("install_root = 1\n", "install_root"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "agent.toml").write_text(text)
    with pytest.raises(SettingError, match=f"'{key}'"):
        load_settings(tmp_path)


@pytest.mark.parametrize("jitter", [0, 0.5])
def test_the_jitter_limits_are_accepted(tmp_path: Path, jitter: float) -> None:
    assert load_settings(tmp_path, {"jitter": jitter}).jitter == jitter


def test_node_agent_run_with_a_bad_setting_exits_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("jitter = 2\n")
    code, out = exit_of(start_agent("run", "--data-dir", str(tmp_path)))
    assert code == 2 and "invalid setting 'jitter'" in out


def test_the_bandwidth_cap_sleeps_for_bytes_beyond_one_second_of_budget() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000, clock=lambda: now[0], sleep=sleep)
    bucket.take(1000)  # a full second's budget at once: no wait
    assert slept == []
    for _ in range(4):
        bucket.take(500)
    assert sum(slept) == pytest.approx(2.0)  # 2000 more bytes at 1000 bytes/s
    assert now[0] == pytest.approx(2.0)


def test_backoff_doubles_with_jitter_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(8, random.Random(7))
    waits = [backoff.next() for _ in range(7)]
    for wait, ceiling in zip(waits, [1, 2, 4, 8, 8, 8, 8], strict=True):
        assert ceiling / 2 <= wait <= ceiling
    backoff.reset()
    assert backoff.next() <= 1


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
def test_each_poll_waits_the_servers_interval_within_the_jitter(jitter: float) -> None:
    rng = random.Random(3)
    delays = [poll_delay(30, jitter, rng) for _ in range(200)]
    assert all(30 * (1 - jitter) <= d <= 30 * (1 + jitter) for d in delays)
    if jitter == 0:
        assert set(delays) == {30}


def test_node_agent_run_before_enrollment_says_to_enroll_first(tmp_path: Path) -> None:
    code, out = exit_of(start_agent("run", "--data-dir", str(tmp_path)))
    assert code == 2 and "enroll this device first (node-agent enroll)" in out
