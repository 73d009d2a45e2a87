"""Settings come from defaults, a TOML file, the environment and flags, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.settings import EdgeSettings, load_edge_settings
from repository.settings import SettingsError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_defaults_need_nothing() -> None:
    s = load_edge_settings(env={})
    assert s == EdgeSettings()
    assert (s.port, s.host, s.storage.backend) == (8082, "127.0.0.1", "local")


def test_file_then_environment_then_flags_win_in_that_order(tmp_path: Path) -> None:
    config = write(tmp_path, 'port = 9000\nnode_id = "from-file"\n[storage]\npresign_expiry = 60\n')
    env = {"EDGE_PORT": "9100", "EDGE_STORAGE_PRESIGN_EXPIRY": "90", "EDGE_ADMIN_TOKEN": "env-token"}
    s = load_edge_settings(config, env=env, port=9200, data_dir=None)
    assert s.port == 9200
    assert s.node_id == "from-file"
    assert s.storage.presign_expiry == 90
    assert s.admin_token == "env-token"
    assert s.data_dir == Path("edge-data")


def test_s3_settings_come_from_the_environment() -> None:
    env = {"EDGE_STORAGE_BACKEND": "s3", "EDGE_STORAGE_BUCKET": "b", "EDGE_STORAGE_REDIRECT_DOWNLOADS": "false"}
    s = load_edge_settings(env=env)
    assert (s.storage.backend, s.storage.bucket, s.storage.redirect_downloads) == ("s3", "b", False)


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("prot = 1\n", {}, "prot"),
        ("[storage]\nbuckett = 'x'\n", {}, "storage.buckett"),
        ('port = "80"\n', {}, "port"),
        ("port = 1.5\n", {}, "port"),
        ("port = true\n", {}, "port"),
        ("port = 70000\n", {}, "port"),
        ("storage = 3\n", {}, "storage"),
        ("", {"EDGE_PORT": "eighty"}, "EDGE_PORT"),
        ("", {"EDGE_STORAGE_REDIRECT_DOWNLOADS": "maybe"}, "EDGE_STORAGE_REDIRECT_DOWNLOADS"),
        ("", {"EDGE_STORAGE_BACKEND": "ftp"}, "storage.backend"),
        ("", {"EDGE_STORAGE_BACKEND": "s3"}, "storage.bucket"),
        ("admin_token = 'abc'\n", {}, "admin_token"),
        ("upload_min_rate = -1\n", {}, "upload_min_rate"),
        ("upload_rate_window = 0\n", {}, "upload_rate_window"),
        ("", {"EDGE_UPLOAD_DEADLINE": "soon"}, "EDGE_UPLOAD_DEADLINE"),
        ("this is not toml", {}, "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace(".", r"\.")):
        load_edge_settings(write(tmp_path, text), env=env)


def test_a_missing_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_edge_settings(tmp_path / "nope.toml", env={})
