"""What an edge adds to the request metrics: refusals by the kind of rule, transactions by state.

The edge's pipeline (edge/pipeline.py) counts its requests with the audit step's numbers: body
bytes are ``AccessContext.bytes_sent`` (what the kernel took, sendfile included), and a response
cut off part way counts with the status it had said (``AccessContext.status``), as in the audit trail.
"""

from __future__ import annotations

from aiohttp import web

from repository.http import keys as core
from repository.http.metrics import HttpMetrics, Rows, setup_metrics
from repository.http.setup import database

from .access.context import access_context
from .settings import EdgeSettings
from .store import EdgeStore

# The first word of the access pipeline's rules (edge.access.rules, signed URLs), kept as it is.
ACCESS_RULES = ("ip-deny", "ip-allow", "ip-unknown", "geo-deny", "geo-allow", "geo-unknown", "signed-url")
# The label of every refusal, so the counter cannot grow with what clients send:
# authentication: no identity where one is needed (401); credentials: a credential that does
# not check out (401); permission: a role or permission target refused (403); policy: what the
# node refuses whoever asks, such as a write to a read-only repo (403).
DENIAL_RULES = (*ACCESS_RULES, "authentication", "credentials", "permission", "policy")


def denial_rule(request: web.Request, status: int) -> str | None:
    """The bounded kind of rule that refused a request; None when it was not refused."""
    if status not in (401, 403):
        return None
    ctx = request.get(access_context)
    if ctx is not None and ctx.denied_by:
        kind = ctx.denied_by.split(" ", 1)[0].rstrip(":")
        return kind if kind in ACCESS_RULES else "policy"
    if core.denied_by in request:
        return "authentication" if status == 401 else "permission"
    return "credentials" if status == 401 else "policy"


def setup_edge_metrics(app: web.Application, settings: EdgeSettings) -> HttpMetrics:
    metrics = setup_metrics(app, settings)
    denials = metrics.counters(
        "edge_access_denials", "Requests refused (401, 403), by the kind of rule that refused them.", ["rule"]
    )
    for rule in DENIAL_RULES:  # every series exists from the start, so rates begin at 0
        denials.declare((rule,))

    def count_denial(request: web.Request, _response: web.StreamResponse | None, status: int) -> None:
        rule = denial_rule(request, status)
        if rule is not None:
            denials.inc((rule,))

    async def transactions() -> Rows:
        counts = await EdgeStore(app[database]).count_by_state()
        return [((state.value,), float(n)) for state, n in counts.items()]

    metrics.on_request.append(count_denial)
    metrics.add_state("edge_transactions", "Distribution transactions on this edge, by state.", ["state"], transactions)
    return metrics
