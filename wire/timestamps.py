"""The one spelling of a time on the wire: ``2026-11-22T10:00:00.000Z`` (UTC, milliseconds).

Artifactory's clients parse this shape in every answer (JFrog CLI, dohq-artifactory), and
a manifest's ``created`` uses it too, so both services, the edges and their clients
format times here and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(moment: datetime | None = None) -> str:
    """``moment`` (now by default) in the wire's spelling, truncated to milliseconds."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso(ms: int) -> str:
    """A time in milliseconds since the epoch (how the catalogs store times) in the wire's spelling."""
    return utc_timestamp(datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=ms % 1000 * 1000))
