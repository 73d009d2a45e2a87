"""The ``[pull]`` settings of an edge: validated at start, naming the key, limits at their edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.pull_settings import MAX_PARALLEL_BLOBS, PullSettings
from edge.settings import load_edge_settings
from repository.settings import InvalidSetting, SettingsError

CREDENTIAL = "pull-1." + "a1" * 32
ON = {"EDGE_PULL_SERVICE_URL": "http://dist.example:8080", "EDGE_PULL_CREDENTIAL": CREDENTIAL}


def test_pull_mode_is_off_by_default_and_on_with_a_service_url_and_a_credential() -> None:
    assert not load_edge_settings(env={}).pull.enabled
    on = load_edge_settings(env=ON | {"EDGE_PULL_INTERVAL": "5", "EDGE_PULL_PARALLEL_BLOBS": "8"}).pull
    assert (on.enabled, on.read_credential(), on.interval, on.parallel_blobs) == (True, CREDENTIAL, 5.0, 8)


def test_the_credential_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "credential"
    path.write_text(CREDENTIAL + "\n")
    env = {"EDGE_PULL_SERVICE_URL": ON["EDGE_PULL_SERVICE_URL"], "EDGE_PULL_CREDENTIAL_FILE": str(path)}
    assert load_edge_settings(env=env).pull.read_credential() == CREDENTIAL
    path.write_text("not a credential")
    with pytest.raises(InvalidSetting, match="credential_file"):
        load_edge_settings(env=env).pull.read_credential()
    path.unlink()
    with pytest.raises(InvalidSetting, match="credential_file"):
        load_edge_settings(env=env).pull.read_credential()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"EDGE_PULL_SERVICE_URL": "ftp://dist"}, "service_url"),
        ({"EDGE_PULL_SERVICE_URL": "http://dist:8080"}, "credential"),
        (ON | {"EDGE_PULL_CREDENTIAL_FILE": "/etc/credential"}, "credential"),
        (ON | {"EDGE_PULL_CREDENTIAL": "a-token"}, "credential"),
        (ON | {"EDGE_PULL_INTERVAL": "soon"}, "EDGE_PULL_INTERVAL"),
    ],
)
def test_bad_pull_settings_are_refused_naming_the_key(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_edge_settings(env=env)


@pytest.mark.parametrize(("interval", "ok"), [(0, False), (0.5, False), (1, True), (86399, True), (86400, True),
                                              (86401, False)])  # fmt: skip
def test_the_poll_interval_is_1_to_86400_seconds(interval: float, ok: bool) -> None:
    if ok:
        assert PullSettings(interval=interval).interval == interval
    else:
        with pytest.raises(InvalidSetting, match="interval"):
            PullSettings(interval=interval)


@pytest.mark.parametrize(
    ("parallel", "ok"),
    [
        (0, False),
        (1, True),
        (MAX_PARALLEL_BLOBS - 1, True),
        (MAX_PARALLEL_BLOBS, True),
        (MAX_PARALLEL_BLOBS + 1, False),
    ],
)
def test_parallel_blob_downloads_are_1_to_the_limit(parallel: int, ok: bool) -> None:
    if ok:
        assert PullSettings(parallel_blobs=parallel).parallel_blobs == parallel
    else:
        with pytest.raises(InvalidSetting, match="parallel_blobs"):
            PullSettings(parallel_blobs=parallel)
