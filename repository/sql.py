"""One way to run SQL on both engines a node can keep its state in: sqlite (the embedded
default) and PostgreSQL (replicas sharing one database).

Store modules write their SQL once, with named parameters (``:repo``), and run it through a
``Sql`` connection: SQLAlchemy Core compiles it for the engine (``?`` for sqlite, ``%(repo)s``
for psycopg) and caches the compiled form. A list or tuple value is an expanding parameter
(``sha256 IN :shas``). Statements run in autocommit; ``atomic()`` makes a block of them one
transaction (a savepoint when nested), so the same code is all-or-nothing on both engines.

On PostgreSQL an atomic block is SERIALIZABLE: replicas write the same rows at once, and the
code was written for sqlite's one writer at a time. What that costs is a retry: a block that
loses a race fails with a serialization error, which ``Database`` runs again (``retryable``).

The SQL both engines share is the common part of the two: ``INSERT ... ON CONFLICT``, row
values, ``RETURNING``, ``LIMIT``. Text keys compare by code point on both (sqlite's BINARY
collation; the PostgreSQL database must use the ``C`` collation, checked at open).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.pool import NullPool

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# SQLSTATEs of a transaction that lost a race with another one and may simply run again.
_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected
# Rows to one multi-row INSERT (``Sql.insert_columns``): past a few hundred, longer statements gain
# nothing, and 256 rows of a wide table (the audit trail's 18 columns: 4,608 parameters) stay far
# below both engines' limits on parameters (sqlite 32,766, PostgreSQL 65,535).
ROWS_PER_INSERT = 256


def engine_for(url: str) -> sa.Engine:
    """An engine whose connections run in autocommit (``Sql.atomic`` opens transactions itself).

    sqlite gets no pool: each database thread holds its one connection for the process's life.
    PostgreSQL URLs use psycopg 3 (``postgresql://`` means ``postgresql+psycopg://``)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})
    else:
        engine = sa.create_engine(url, pool_size=1, max_overflow=8, pool_pre_ping=True)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction that lost a race (PostgreSQL) and may run again whole."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in _RETRYABLE


@functools.lru_cache(maxsize=4096)
def _statement(sql: str, expanding: frozenset[tuple[str, bool]]) -> sa.TextClause:
    """``sql`` as a ``text()``; ``expanding`` names its list parameters, each with whether it
    holds integers. The type matters for an empty list, which SQLAlchemy renders as an empty
    subquery of that type: untyped, it is an integer one, which PostgreSQL refuses to compare
    with a text column. An empty list is taken for text (every list the stores pass is of keys
    or digests); a query of an integer column by a list that may be empty must skip the query."""
    clause = sa.text(sql)
    if expanding:
        clause = clause.bindparams(
            *(
                sa.bindparam(name, expanding=True, type_=sa.BigInteger() if integers else sa.Text())
                for name, integers in sorted(expanding)
            )
        )
    return clause


@functools.lru_cache(maxsize=1024)
def _for_driver(sql: str, dialect: sa.Dialect) -> tuple[str, Callable[[Mapping[str, Any]], Any] | None]:
    """``sql`` as the driver takes it, and what makes one row of named values its parameters
    (None: the driver takes the mapping itself, as psycopg's ``%(name)s`` does)."""
    compiled = _statement(sql, frozenset()).compile(dialect=dialect)
    names = compiled.positiontup
    if not compiled.positional or not names:
        return compiled.string, None
    if len(names) == 1:
        (name,) = names
        return compiled.string, lambda row: (row[name],)
    return compiled.string, operator.itemgetter(*names)


@functools.lru_cache(maxsize=256)
def _multi_row_insert(table: str, columns: tuple[str, ...], count: int, placeholder: str) -> str:
    """``INSERT INTO table (columns) VALUES (...), (...)`` for ``count`` rows, with the driver's
    positional placeholder."""
    row = "(" + ", ".join([placeholder] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row] * count)


def _chunk_sizes(total: int) -> Iterator[int]:
    """How many rows each statement of ``total`` takes: ``ROWS_PER_INSERT`` while that many are
    left, then what is left as powers of two (99: 64, 32, 2, 1). So every statement is one of a
    few texts, each prepared once and found in the driver's statement cache after: preparing a
    statement of a hundred rows costs sqlite more than running it four times, and a text per
    size of remainder would also push other statements out of that cache."""
    full, rest = divmod(total, ROWS_PER_INSERT)
    yield from [ROWS_PER_INSERT] * full
    for shift in reversed(range(rest.bit_length())):
        if rest >> shift & 1:
            yield 1 << shift


def _expanding(params: Mapping[str, Any]) -> frozenset[tuple[str, bool]]:
    return frozenset(
        (name, bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
        for name, value in params.items()
        if isinstance(value, list | tuple)
    )


class Sql:
    """A connection of one database thread: SQL with named parameters, and ``atomic`` blocks."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._depth = 0

    @property
    def conn(self) -> Any:
        """The driver's own connection (sqlite3's ``blobopen``, ``create_function``)."""
        return self.connection.connection.dbapi_connection

    def execute(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run one statement. A mapping binds ``:name`` parameters (on both engines); a sequence
        binds sqlite's ``?`` parameters, which only sqlite understands."""
        if params is None or isinstance(params, Mapping):
            params = params or {}
            expanding = _expanding(params)
            if expanding:
                return self.connection.execute(_statement(sql, expanding), params)
            # Straight to the driver, as executemany: SQLAlchemy's own work per statement cost a
            # catalog lookup on sqlite half as much again as the lookup itself.
            statement, to_params = _for_driver(sql, self.connection.dialect)
            return self.connection.exec_driver_sql(statement, to_params(params) if to_params else params)
        if self.dialect != SQLITE:
            raise TypeError(f"positional parameters are sqlite's only; name them: {sql[:80]}")
        return self.connection.exec_driver_sql(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]) -> int:
        """Run one statement for each of ``rows`` (mappings for ``:name``; sequences for sqlite's ``?``);
        the rows they changed, all told."""
        if not rows:
            return 0
        if isinstance(rows[0], Mapping):
            # Straight to the driver's executemany: SQLAlchemy's own costs more per row than the
            # insert itself on sqlite, and a bulk page or an audit batch is thousands of rows.
            statement, to_params = _for_driver(sql, self.connection.dialect)
            named = cast(Sequence[Mapping[str, Any]], rows)
            params = [to_params(r) for r in named] if to_params else list(named)
            return self.connection.exec_driver_sql(statement, params).rowcount
        if self.dialect != SQLITE:
            raise TypeError(f"positional parameters are sqlite's only; name them: {sql[:80]}")
        return self.connection.exec_driver_sql(sql, [tuple(r) for r in rows]).rowcount

    def insert_columns(
        self, table: str, columns: Mapping[str, Sequence[Any]], *, optional: Collection[str] = ()
    ) -> None:
        """Append rows to ``table``, given by column (``columns``: each column's values, all of one
        length), up to ``ROWS_PER_INSERT`` to a statement (``_chunk_sizes``), in order: where a
        table numbers its rows, they are numbered in this order.

        A column named in ``optional`` that is NULL in every row of a statement is left out of it,
        so it takes its default, which must be NULL. sqlite3 binds a None at five times the cost of
        an integer (it looks for an adapter first), and most of the audit trail's columns are NULL
        in most records. The statement texts stay few (a handful of sizes for each set of columns
        present), and each is prepared once and reused from the driver's statement cache.

        A multi-row INSERT costs a third less per row than one statement per row run by
        ``executemany`` on sqlite (which also pays AUTOINCREMENT's bookkeeping once per statement),
        and fewer round trips on PostgreSQL: for the audit trail, which writes a row per request.
        The values are sliced and interleaved by C builtins (``zip``, ``chain``): no Python
        code runs per row."""
        placeholder = "?" if self.dialect == SQLITE else "%s"
        names = tuple(columns)
        values = tuple(columns.values())
        total = len(values[0]) if values else 0
        start = 0
        for count in _chunk_sizes(total):
            chunk = [column[start : start + count] for column in values]
            start += count
            present = [
                (name, column)
                for name, column in zip(names, chunk, strict=True)
                if name not in optional or column.count(None) != count
            ]
            statement = _multi_row_insert(table, tuple(name for name, _ in present), count, placeholder)
            rows = zip(*(column for _, column in present), strict=True)
            self.connection.exec_driver_sql(statement, tuple(chain.from_iterable(rows)))

    def scalar(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def atomic(self, *, serializable: bool = True) -> Iterator[Sql]:
        """A transaction (a savepoint inside one): every statement in the block or none.

        sqlite's takes the write lock at once (``BEGIN IMMEDIATE``), so a block that reads and
        then writes never fails halfway for a lock another process took in between.

        ``serializable=False`` is for a block whose writes commute with any other's (rows
        appended, counters added to by ``ON CONFLICT DO UPDATE``): on PostgreSQL it runs READ
        COMMITTED, where such a write waits for a row another replica holds and then applies to
        it, instead of losing the race and running again, which a busy row can make it do
        again and again. (sqlite has one writer at a time either way.)"""
        depth = self._depth
        if depth == 0:
            if self.dialect == SQLITE:
                self._raw("BEGIN IMMEDIATE")
            else:
                self._raw(f"BEGIN ISOLATION LEVEL {'SERIALIZABLE' if serializable else 'READ COMMITTED'}")
        else:
            self._raw(f"SAVEPOINT sp{depth}")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth = depth
            if self.connection.invalidated:  # the server went away: it rolled back already
                raise
            with contextlib.suppress(sa.exc.DBAPIError):  # a connection lost just now has too
                self._raw("ROLLBACK" if depth == 0 else f"ROLLBACK TO SAVEPOINT sp{depth}")
                if depth:
                    self._raw(f"RELEASE SAVEPOINT sp{depth}")
            raise
        self._depth = depth
        self._raw("COMMIT" if depth == 0 else f"RELEASE SAVEPOINT sp{depth}")

    def forget_lost_connection(self) -> None:
        """After the server went away (a restart, a fail-over): drop what SQLAlchemy keeps of the
        dead connection's transaction, so that the next statement connects again. Without this,
        every later statement on this thread fails with PendingRollbackError."""
        if self.connection.invalidated:
            self._depth = 0
            self.connection.rollback()

    def _raw(self, statement: str) -> None:
        self.connection.exec_driver_sql(statement)

    def close(self) -> None:
        self.connection.close()
