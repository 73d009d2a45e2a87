"""Every query of the audit trail and the download statistics, run on the database thread."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repository.catalog import now_ms
from repository.db import Database
from repository.stats import DownloadStats

if TYPE_CHECKING:
    from .audit import AuditRecord

DAY_MS = 24 * 3600 * 1000
PRUNE_CHUNK = 10_000
DENIED_STATUSES = (401, 403)
COLUMNS = (
    "id, time, subject, token_id, signed_kid, signed_iat, client_ip, country, method, action, repo, path,"
    " status, bytes, denied_by, aborted, duration_ms"
)
_INSERT = (
    "INSERT INTO audit (time, subject, token_id, signed_kid, signed_iat, client_ip, country, method, action,"
    " repo, path, status, bytes, denied_by, aborted, duration_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COUNT_DOWNLOAD = (
    "INSERT INTO download_stats (repo, path, count, last_downloaded, last_downloaded_by) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (repo, path) DO UPDATE SET count = count + excluded.count,"
    " last_downloaded_by = CASE WHEN excluded.last_downloaded >= last_downloaded"
    " THEN excluded.last_downloaded_by ELSE last_downloaded_by END,"
    " last_downloaded = max(last_downloaded, excluded.last_downloaded)"
)


@dataclass(frozen=True)
class AuditQuery:
    since: int | None = None  # epoch ms, inclusive
    until: int | None = None  # epoch ms, exclusive
    repo: str | None = None
    path: str | None = None  # exact, or a prefix when it ends with '*'
    ip: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    action: str | None = None  # an action, or "denied" for every 401/403
    subject: str | None = None
    before_id: int | None = None  # the paging cursor: records older than this id
    limit: int = 100


@dataclass(frozen=True)
class AuditRow:
    id: int
    time: int
    subject: str
    token_id: str | None
    signed_kid: str | None
    signed_iat: int | None
    client_ip: str | None
    country: str | None
    method: str
    action: str
    repo: str | None
    path: str | None
    status: int
    bytes: int
    denied_by: str | None
    aborted: int  # 0 or 1
    duration_ms: int


def _in_network(address: str | None, network: str) -> bool:
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network)
    except ValueError:
        return False


class AuditStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._functions_ready = False

    # -- writing ----------------------------------------------------------------

    async def write(self, batch: Sequence[AuditRecord]) -> None:
        await self._database.run(self._write, batch)

    def _write(self, batch: Sequence[AuditRecord]) -> None:
        db = self._database.db
        rows = [
            (
                r.time,
                r.subject,
                r.token_id,
                r.signed_kid,
                r.signed_iat,
                r.client_ip,
                r.country,
                r.method,
                r.action,
                r.repo,
                r.path,
                r.status,
                r.bytes,
                r.denied_by,
                int(r.aborted),
                r.duration_ms,
            )
            for r in batch
        ]
        with db.atomic():
            db.conn.executemany(_INSERT, rows)
            # one upsert per file and batch; in order, so a delete between downloads resets the count
            counts: dict[tuple[str, str], list[Any]] = {}
            for r in batch:
                if r.counts_as_download and r.repo and r.path:
                    found = counts.get((r.repo, r.path))
                    if found is None:
                        counts[(r.repo, r.path)] = [1, r.time, r.subject]
                    else:
                        found[0] += 1
                        if r.time >= found[1]:
                            found[1:] = [r.time, r.subject]
                elif r.action == "delete" and r.status == 204 and r.repo:
                    self._add_counts(counts)
                    counts = {}
                    self._forget_stats(r.repo, r.path or "")
            self._add_counts(counts)

    def _add_counts(self, counts: dict[tuple[str, str], list[Any]]) -> None:
        if counts:
            self._database.db.conn.executemany(_COUNT_DOWNLOAD, [(*key, *value) for key, value in counts.items()])

    def _forget_stats(self, repo: str, path: str) -> None:
        db = self._database.db
        if not path:
            db.execute("DELETE FROM download_stats WHERE repo = ?", [repo])
            return
        db.execute(
            "DELETE FROM download_stats WHERE repo = ? AND (path = ? OR (path >= ? AND path < ?))",
            [repo, path, path + "/", path + "0"],  # '0' sorts right after '/'
        )

    async def prune(self, retention_days: int, now: int | None = None) -> int:
        """Remove records older than ``retention_days``, a chunk per transaction; answers how many."""
        cutoff = (now if now is not None else now_ms()) - retention_days * DAY_MS
        removed = 0
        while True:
            cursor = await self._database.run(
                self._database.db.execute,
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ? ORDER BY id LIMIT ?)",
                [cutoff, PRUNE_CHUNK],
            )
            removed += cursor.rowcount
            if cursor.rowcount < PRUNE_CHUNK:
                return removed

    # -- reading ----------------------------------------------------------------

    async def query(self, q: AuditQuery) -> list[AuditRow]:
        """Matching records, newest first, at most ``q.limit``."""
        return await self._database.run(self._query, q)

    def _query(self, q: AuditQuery) -> list[AuditRow]:
        if not self._functions_ready:
            self._database.db.conn.create_function("in_network", 2, _in_network, deterministic=True)
            self._functions_ready = True
        where, args = _conditions(q)
        sql = f"SELECT {COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._database.db.execute(sql, [*args, q.limit]).fetchall()
        return [AuditRow(*r) for r in rows]

    async def download_stats(self, repo: str, path: str) -> DownloadStats:
        row = await self._database.run(
            lambda: self._database.db.execute(
                "SELECT count, last_downloaded, last_downloaded_by FROM download_stats WHERE repo = ? AND path = ?",
                [repo, path],
            ).fetchone()
        )
        return DownloadStats(*row) if row else DownloadStats()


def _conditions(q: AuditQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []

    def add(condition: str, *values: Any) -> None:
        where.append(condition)
        args.extend(values)

    if q.since is not None:
        add("time >= ?", q.since)
    if q.until is not None:
        add("time < ?", q.until)
    if q.repo is not None:
        add("repo = ?", q.repo)
    if q.path is not None:
        if q.path.endswith("*"):
            prefix = q.path[:-1]
            add("path >= ? AND path < ?", prefix, prefix + "\U0010ffff")
        else:
            add("path = ?", q.path)
    if q.ip is not None:
        if q.ip.num_addresses == 1:
            add("client_ip = ?", str(q.ip.network_address))
        else:
            add("in_network(client_ip, ?)", str(q.ip))
    if q.action == "denied":
        add(f"status IN ({', '.join('?' * len(DENIED_STATUSES))})", *DENIED_STATUSES)
    elif q.action is not None:
        add("action = ?", q.action)
    if q.subject is not None:
        add("subject = ?", q.subject)
    if q.before_id is not None:
        add("id < ?", q.before_id)
    return where, args
