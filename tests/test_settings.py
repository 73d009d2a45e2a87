"""Settings come from defaults, a TOML file, the environment and flags, validated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main as edge_cli
from edge.settings import MAX_WORKERS, EdgeSettings, load_edge_settings
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


def test_the_database_is_the_sqlite_file_unless_a_postgresql_url_is_set(tmp_path: Path) -> None:
    assert load_edge_settings(env={}, data_dir=tmp_path).database_target == tmp_path / "catalog.db"
    url = "postgresql://edge:secret@db.internal:5432/edge"
    assert load_edge_settings(env={"EDGE_DATABASE_URL": url}).database_target == url
    psycopg_url = "postgresql+psycopg://edge@db/edge"
    assert load_edge_settings(write(tmp_path, f"database_url = '{psycopg_url}'\n")).database_target == psycopg_url


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
        ("database_url = 'mysql://db/edge'\n", {}, "database_url"),
        ("", {"EDGE_DATABASE_URL": "edge.db"}, "database_url"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace(".", r"\.")):
        load_edge_settings(write(tmp_path, text), env=env)


def test_a_missing_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_edge_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("workers", [1, 2, MAX_WORKERS - 1, MAX_WORKERS])
def test_workers_from_1_to_the_limit_are_taken_from_file_environment_and_flag(tmp_path: Path, workers: int) -> None:
    assert load_edge_settings(write(tmp_path, f"workers = {workers}\n"), env={}).workers == workers
    assert load_edge_settings(env={"EDGE_WORKERS": str(workers)}).workers == workers
    assert load_edge_settings(env={}, workers=workers).workers == workers


def test_workers_default_to_one_per_core_this_process_may_use() -> None:
    assert load_edge_settings(env={}).workers == min(len(os.sched_getaffinity(0)), MAX_WORKERS)


@pytest.mark.parametrize("workers", [0, -1, MAX_WORKERS + 1])
def test_workers_outside_1_to_the_limit_are_refused_from_file_environment_and_flag(
    tmp_path: Path, workers: int
) -> None:
    message = f"setting 'workers' must be 1 to {MAX_WORKERS}"
    with pytest.raises(SettingsError, match=message):
        load_edge_settings(write(tmp_path, f"workers = {workers}\n"), env={})
    with pytest.raises(SettingsError, match=message):
        load_edge_settings(env={"EDGE_WORKERS": str(workers)})
    with pytest.raises(SettingsError, match=message):
        load_edge_settings(env={}, workers=workers)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], f"setting 'workers' must be 1 to {MAX_WORKERS}"),
        (["--workers", str(MAX_WORKERS + 1)], f"setting 'workers' must be 1 to {MAX_WORKERS}"),
        (["--workers", "two"], "'two' is not a valid integer"),
        (["--port", "70000"], "setting 'port' must be 0 to 65535"),
    ],
)
def test_edge_serve_with_a_bad_flag_stops_at_once_with_a_one_line_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(edge_cli, ["serve", "--data-dir", str(tmp_path / "data"), *args], env={})
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()
