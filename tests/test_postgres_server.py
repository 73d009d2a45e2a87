"""The real PostgreSQL server the database tests run against, checked for what they rely on.

Every test gets a database no other test sees; committed rows survive a restart and a
crash; the server is reachable from this machine only; two workers taking jobs with
``FOR UPDATE SKIP LOCKED`` never get the same row; it takes as many connections as it is
configured for; and a server that cannot start says why.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from devstack.postgres import MAX_CONNECTIONS, PostgresServer
from devstack.processes import StartFailed

METADATA = sa.MetaData()
JOBS = sa.Table(
    "jobs",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
)
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp*


@contextmanager
def engine_on(url: str) -> Iterator[Engine]:
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def add_jobs(engine: Engine, count: int) -> None:
    METADATA.create_all(engine)
    with engine.begin() as conn:
        conn.execute(JOBS.insert(), [{"id": i, "state": "queued"} for i in range(1, count + 1)])


def job_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(JOBS.c.id).order_by(JOBS.c.id)))


def take_job(conn: Connection) -> int | None:
    """What a job runner does: the first queued job nobody else holds, locked until commit."""
    query = (
        sa.select(JOBS.c.id)
        .where(JOBS.c.state == "queued")
        .order_by(JOBS.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.scalar(query)


def database_names(server: PostgresServer) -> set[str]:
    with engine_on(server.url()) as engine, engine.connect() as conn:
        return set(conn.scalars(sa.text("SELECT datname FROM pg_database")))


def listening_addresses(port: int) -> set[str]:
    """Every local address with a TCP socket listening on ``port`` in this network namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(words)))
    return found


def test_each_test_gets_an_empty_database_that_no_other_database_shares(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with engine_on(postgres_url) as mine:
        assert sa.inspect(mine).get_table_names() == []
        add_jobs(mine, 3)
        with postgres_server.database() as other_url, engine_on(other_url) as other:
            assert other_url != postgres_url
            assert sa.inspect(other).get_table_names() == []
            with other.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="does not exist"):
                conn.execute(sa.select(JOBS.c.id))
        assert job_ids(mine) == [1, 2, 3]


def test_a_database_is_dropped_after_use_even_while_a_client_still_holds_a_connection(
    postgres_server: PostgresServer,
) -> None:
    with postgres_server.database() as url:
        name = url.rsplit("/", 1)[1]
        assert name in database_names(postgres_server)
        held = psycopg.connect(postgres_server.dsn(name))
    try:
        assert name not in database_names(postgres_server)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()


def test_rows_committed_before_a_restart_are_seen_by_a_new_connection_after_it(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with engine_on(postgres_url) as engine:
        add_jobs(engine, 2)
    port = postgres_server.port
    postgres_server.restart()
    assert postgres_server.port == port
    with engine_on(postgres_url) as engine:
        assert job_ids(engine) == [1, 2]


def test_a_crashed_server_recovers_every_committed_row_and_no_uncommitted_one(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with engine_on(postgres_url) as engine:
        add_jobs(engine, 2)
        with engine.connect() as open_transaction:
            open_transaction.execute(JOBS.insert().values(id=3, state="queued"))
            postgres_server.stop("immediate")
            log_before = postgres_server.log_path.read_text()
            postgres_server.start()
            open_transaction.invalidate()  # its server process is gone
    with engine_on(postgres_url) as engine:
        assert job_ids(engine) == [1, 2]
    recovery = postgres_server.log_path.read_text()[len(log_before) :]
    assert "not properly shut down; automatic recovery in progress" in recovery


def test_the_server_listens_on_127_0_0_1_only(postgres_server: PostgresServer, postgres_url: str) -> None:
    with engine_on(postgres_url) as engine, engine.connect() as conn:
        assert conn.scalar(sa.text("SHOW listen_addresses")) == "127.0.0.1"
        assert conn.scalar(sa.text("SHOW unix_socket_directories")) == str(postgres_server.root)
    assert listening_addresses(postgres_server.port) == {"127.0.0.1"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", postgres_server.port), timeout=10).close()


def test_the_server_never_runs_as_root(postgres_server: PostgresServer) -> None:
    postmaster = int((postgres_server.data_dir / "postmaster.pid").read_text().split()[0])
    uid_line = next(line for line in Path(f"/proc/{postmaster}/status").read_text().splitlines() if line[:4] == "Uid:")
    real, effective = (int(n) for n in uid_line.split()[1:3])
    expected = os.geteuid() or pwd.getpwnam("postgres").pw_uid
    assert real == effective == expected != 0


def test_two_runners_taking_jobs_with_skip_locked_get_different_rows(postgres_url: str) -> None:
    with engine_on(postgres_url) as engine:
        add_jobs(engine, 3)
        with engine.connect() as first, engine.connect() as second, engine.connect() as third:
            # a runner that waited for a lock instead of skipping it fails here instead of hanging
            second.execute(sa.text("SET lock_timeout = '10s'"))
            assert take_job(first) == 1
            assert take_job(second) == 2
            assert take_job(third) == 3
            with engine.connect() as fourth:
                assert take_job(fourth) is None
                fourth.rollback()
                first.execute(JOBS.update().where(JOBS.c.id == 1).values(state="done"))
                first.commit()
                second.rollback()  # runner two gave up: its job is free again, runner one's is done
                assert take_job(fourth) == 2


def test_the_session_server_takes_the_configured_connections(postgres_url: str) -> None:
    with engine_on(postgres_url) as engine, engine.connect() as conn:
        assert int(conn.scalar(sa.text("SHOW max_connections"))) == MAX_CONNECTIONS


def test_a_server_takes_exactly_max_connections_at_once_and_refuses_the_next(tmp_path: Path) -> None:
    limit = 20
    with PostgresServer(tmp_path, max_connections=limit) as server:
        dsn = server.dsn()
        conns = []
        try:
            for _ in range(limit):
                conns.append(psycopg.connect(dsn))
            assert [c.execute("SELECT 1").fetchone() for c in conns] == [(1,)] * limit
            with pytest.raises(psycopg.OperationalError, match="too many clients"):
                psycopg.connect(dsn).close()
        finally:
            for conn in conns:
                conn.close()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # PostgreSQL keeps 3 of max_connections for superusers and refuses to start with no slot left.
    server = PostgresServer(tmp_path, max_connections=3)
    with pytest.raises(StartFailed) as failed, server:
        pass
    assert "superuser_reserved_connections (3) must be less than max_connections (3)" in str(failed.value)
    assert not server.root.exists()
