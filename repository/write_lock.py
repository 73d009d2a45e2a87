"""One writer at a time for the catalog's multi-step changes, on PostgreSQL as on sqlite.

sqlite has one writer (``BEGIN IMMEDIATE``): a change that reads, then writes, never races
another. On PostgreSQL replicas write at once and an atomic block is SERIALIZABLE, which is
correct, but its predicate locks cover whole index pages (a whole table, once a page of a
thousand entries has read enough): two changes of unrelated paths that sit side by side in an
index, two bundles' pages or an upload beside them, are taken for a race and one of them runs
again. Under a steady stream of writes a change can lose that way time after time, until it
gives up. So the catalog's changes take one advisory lock, held by the session from before
their transaction begins until after it ends: they run one after another across every replica,
as on sqlite, and each one's snapshot (taken at its first statement, after the wait) already
holds every change before it. Single statements (a lease, a counter) need no such lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from .sql import SQLITE, Sql

# pg_advisory_lock's key for "a change of the catalog is under way" (any fixed 64-bit number
# but the schema's, repository/pg_schema.py).
WRITER_LOCK = 0x5E4E_0002


@contextlib.contextmanager
def one_writer(sql: Sql) -> Iterator[Sql]:
    """``sql.atomic()``, begun once every other replica's change of the catalog has ended
    (PostgreSQL). Inside a transaction already, a savepoint of it: the lock is the outer one's."""
    if sql.dialect == SQLITE or sql.in_transaction:
        with sql.atomic():
            yield sql
        return
    sql.execute("SELECT pg_advisory_lock(:key)", {"key": WRITER_LOCK})
    try:
        with sql.atomic():
            yield sql
    finally:
        with contextlib.suppress(sa.exc.DBAPIError):  # a lost session has let go of its locks already
            sql.execute("SELECT pg_advisory_unlock(:key)", {"key": WRITER_LOCK})
