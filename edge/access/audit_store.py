"""Every query of the audit trail and the download statistics, run on the database thread.

The same SQL runs on sqlite and PostgreSQL. A search by network is a range of an index: each
record keeps its client address packed (``packed_address``), and a network is the range from
its first address to its last in that form, so no engine needs a function of its own.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
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
    " status, bytes, denied_by, aborted, duration_ms, served_from"
)
# The columns NULL in most records: left out of a statement where no record of it has one.
_OPTIONAL = frozenset(
    {"token_id", "signed_kid", "signed_iat", "client_ip", "client_ip_packed", "country", "repo", "path", "denied_by",
     "served_from"}
)  # fmt: skip
# Both assignments read the row as it was (SQL's rule on both engines): the later download wins.
_LATER = "excluded.last_downloaded >= download_stats.last_downloaded"
_COUNT_DOWNLOAD = (
    "INSERT INTO download_stats (repo, path, count, last_downloaded, last_downloaded_by)"
    " VALUES (:repo, :path, :count, :last_downloaded, :last_downloaded_by)"
    " ON CONFLICT (repo, path) DO UPDATE SET count = download_stats.count + excluded.count,"
    f" last_downloaded_by = CASE WHEN {_LATER} THEN excluded.last_downloaded_by"
    " ELSE download_stats.last_downloaded_by END,"
    f" last_downloaded = CASE WHEN {_LATER} THEN excluded.last_downloaded ELSE download_stats.last_downloaded END"
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
    served_from: str | None  # the member repo that served a virtual repo's download


@functools.lru_cache(maxsize=4096)
def packed_address(address: str | None) -> bytes | None:
    """``client_ip`` as ``client_ip_packed`` keeps it: the IP version, then the address's bytes.
    Both engines order these bytes as unsigned numbers (memcmp), and an IPv4 key never falls in
    an IPv6 range, so the addresses of a network are exactly one range of the index. The same
    clients come back again and again: parsing is remembered."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return bytes([ip.version]) + ip.packed


def network_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, bytes]:
    """The first and the last packed address of ``network``."""
    version = bytes([network.version])
    return version + network.network_address.packed, version + network.broadcast_address.packed


class AuditStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    # -- writing ----------------------------------------------------------------

    async def write(self, batch: Sequence[AuditRecord]) -> None:
        await self._database.run(self._write, batch)

    def _write(self, batch: Sequence[AuditRecord]) -> None:
        if not batch:
            return
        # By column: the records are taken apart and the columns built by C builtins, with no
        # Python code run per record.
        (
            times, subjects, token_ids, signed_kids, signed_iats, client_ips, countries, methods, actions, repos,
            paths, statuses, sizes, denials, aborted, durations, counted, served_from,
        ) = zip(*batch, strict=True)  # fmt: skip
        subjects = _storable_column(subjects)
        columns = {
            "time": times, "subject": subjects, "token_id": token_ids, "signed_kid": signed_kids,
            "signed_iat": signed_iats, "client_ip": client_ips,
            "client_ip_packed": tuple(map(_packed_value, client_ips)), "country": countries, "method": methods,
            "action": actions, "repo": repos, "path": paths, "status": statuses, "bytes": sizes,
            "denied_by": _storable_column(denials), "aborted": tuple(map(int, aborted)), "duration_ms": durations,
            "served_from": served_from,
        }  # fmt: skip
        db = self._database.db
        with db.atomic(serializable=False):  # records appended, counts added to: replicas never conflict
            db.insert_columns("audit", columns, optional=_OPTIONAL)
            # one upsert per file and batch; around each delete in order, so that a delete between
            # two downloads of a file resets its count
            downloads = (repos, paths, times, subjects, counted)
            start = 0
            if "delete" in actions:
                for end, r in enumerate(batch):
                    if r.action == "delete" and r.status == 204 and r.repo:
                        self._add_counts(_download_counts([column[start:end] for column in downloads]))
                        self._forget_stats(r.repo, r.path or "")
                        start = end + 1
            self._add_counts(_download_counts([column[start:] for column in downloads]))

    async def add_downloads(self, counts: dict[tuple[str, str], list[Any]]) -> None:
        """Add downloads made elsewhere (a remote repo's cached hits, reported by the node that served
        them): ``(repo, path) -> [count, last downloaded (epoch ms), by whom]``."""
        await self._database.run(self._add_counts, counts)

    def _add_counts(self, counts: dict[tuple[str, str], list[Any]]) -> None:
        if counts:
            self._database.db.executemany(
                _COUNT_DOWNLOAD,
                [
                    {"repo": repo, "path": path, "count": count, "last_downloaded": last, "last_downloaded_by": by}
                    for (repo, path), (count, last, by) in counts.items()
                ],
            )

    def _forget_stats(self, repo: str, path: str) -> None:
        db = self._database.db
        if not path:
            db.execute("DELETE FROM download_stats WHERE repo = :repo", {"repo": repo})
            return
        db.execute(
            "DELETE FROM download_stats WHERE repo = :repo AND (path = :path OR (path >= :below AND path < :after))",
            {"repo": repo, "path": path, "below": path + "/", "after": path + "0"},  # '0' sorts right after '/'
        )

    async def prune(self, retention_days: int, now: int | None = None) -> int:
        """Remove records older than ``retention_days``, a chunk per transaction; answers how many."""
        cutoff = (now if now is not None else now_ms()) - retention_days * DAY_MS
        removed = 0
        while True:
            cursor = await self._database.run(
                self._database.db.execute,
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < :cutoff ORDER BY id LIMIT :chunk)",
                {"cutoff": cutoff, "chunk": PRUNE_CHUNK},
            )
            removed += cursor.rowcount
            if cursor.rowcount < PRUNE_CHUNK:
                return removed

    # -- reading ----------------------------------------------------------------

    async def query(self, q: AuditQuery) -> list[AuditRow]:
        """Matching records, newest first, at most ``q.limit``."""
        return await self._database.run(self._query, q)

    def _query(self, q: AuditQuery) -> list[AuditRow]:
        where, params = _conditions(q)
        sql = f"SELECT {COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT :limit"
        rows = self._database.db.execute(sql, {**params, "limit": q.limit}).fetchall()
        return [AuditRow(*r) for r in rows]

    async def download_stats(self, repo: str, path: str) -> DownloadStats:
        row = await self._database.run(
            lambda: self._database.db.execute(
                "SELECT count, last_downloaded, last_downloaded_by FROM download_stats"
                " WHERE repo = :repo AND path = :path",
                {"repo": repo, "path": path},
            ).fetchone()
        )
        return DownloadStats(*row) if row else DownloadStats()


def _conditions(q: AuditQuery) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}

    def add(condition: str, **values: Any) -> None:
        where.append(condition)
        params.update(values)

    if q.since is not None:
        add("time >= :since", since=q.since)
    if q.until is not None:
        add("time < :until", until=q.until)
    if q.repo is not None:
        add("repo = :repo", repo=q.repo)
    if q.path is not None:
        if q.path.endswith("*"):
            prefix = q.path[:-1]
            add("path >= :prefix AND path < :prefix_end", prefix=prefix, prefix_end=prefix + "\U0010ffff")
        else:
            add("path = :path", path=q.path)
    if q.ip is not None:
        first, last = network_range(q.ip)
        add("client_ip_packed BETWEEN :ip_first AND :ip_last", ip_first=first, ip_last=last)
    if q.action == "denied":
        add("status IN :denied", denied=DENIED_STATUSES)
    elif q.action is not None:
        add("action = :action", action=q.action)
    if q.subject is not None:
        add("subject = :subject", subject=q.subject)
    if q.before_id is not None:
        add("id < :before_id", before_id=q.before_id)
    return where, params


def _download_counts(columns: Sequence[Sequence[Any]]) -> dict[tuple[str, str], list[Any]]:
    """``(repo, path) -> [downloads, the last one's time, by whom]`` of records with no delete among
    them, given by column: repo, path, time, subject, and whether each counts as a download. The
    later of two downloads at the same time is the last."""
    repos, paths, times, subjects, counted = columns
    keys = list(compress(zip(repos, paths, strict=True), counted))
    when = list(compress(times, counted))
    who = list(compress(subjects, counted))
    tally = Counter(keys)
    if when == sorted(when):  # as recorded, usually: each file's last download is its latest
        latest = dict(zip(keys, zip(when, who, strict=True), strict=True))
    else:  # the clock went back while the batch was recorded
        latest = {}
        for key, at, by in zip(keys, when, who, strict=True):
            if key not in latest or at >= latest[key][0]:
                latest[key] = (at, by)
    return {(repo, path): [tally[repo, path], *latest[repo, path]] for repo, path in latest if repo and path}


@functools.lru_cache(maxsize=4096)
def _packed_value(address: str | None) -> bytearray | None:
    """``packed_address`` as the writer binds it: sqlite3 binds a bytearray at a third of the cost of
    bytes, which it first looks up among its adapters (PostgreSQL's bytea takes either)."""
    packed = packed_address(address)
    return None if packed is None else bytearray(packed)


def _storable_column(texts: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """``_storable`` of every one of ``texts``; a column with no NUL anywhere, as usual, is looked
    through once, in C."""
    if "\x00" not in "".join(filter(None, texts)):
        return texts
    return tuple(map(_storable, texts))


def _storable(text: str | None) -> str | None:
    """Text PostgreSQL can keep, for the fields whose text comes from outside (a signed URL's
    issuer, an error message): it refuses NUL, and a batch that cannot be written would hold up
    every record queued behind it. Both engines keep U+FFFD in its place."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text
