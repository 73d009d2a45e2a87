"""IP and geo rules: what an operator writes, how it is checked, and how it is replaced at run time.

A rule names the repos it covers (``fnmatch`` patterns such as ``releases-*``; none
means every request, API calls included: a *global* rule) and any of four lists.
For one request every rule that covers it applies, and each must let it through:

- IP: an address in any ``deny_cidrs`` is refused (deny wins over allow); a rule
  with ``allow_cidrs`` refuses every address outside them; an empty allow list
  means everyone. IPv6 clients never match IPv4 networks, nor the reverse, so an
  IPv4-only allow list refuses every IPv6 client and an IPv4-only deny list none.
- Geo, after IP: the same with ISO 3166-1 country codes from the geo database.
  A client whose country is unknown (no or unreadable database, address not in
  it) is answered by ``geo_unknown``: ``deny`` refuses it wherever a geo list
  applies, ``allow`` lets it through.
- An unknown client address (see ``address``) is refused wherever an IP list applies.

The rule set in force is replaced as a whole (``RuleBook.replace``): the settings
file's rules at start, or the last set an admin stored through the API, which
survives restarts in the edge's database.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.settings import InvalidSetting

from .address import IPNetwork, parse_network
from .context import IPAddress

REPO_PATTERN_RE = re.compile(r"[A-Za-z0-9._*?-]{1,64}")
COUNTRY_RE = re.compile(r"[A-Z]{2}")
GEO_UNKNOWN = ("deny", "allow")
MAX_RULES = 1000
MAX_LIST = 10_000
# Applicable rules are remembered per repo name; names come from requests, so the memory is bounded.
MAX_CACHED_REPOS = 4096
LISTS = ("allow_cidrs", "deny_cidrs", "allow_countries", "deny_countries")
# Without a database every country is unknown: a country rule would refuse (or let through,
# per geo_unknown) every client alike.
GEO_NEEDS_DATABASE = (
    "they need a country database; set access.geoip_database (EDGE_ACCESS_GEOIP_DATABASE)"
    " to a MaxMind-format .mmdb file"
)


@dataclass(frozen=True)
class RuleSpec:
    """One ``[[access.rules]]`` table, or one object of the rules API, as written."""

    repos: tuple[str, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    deny_cidrs: tuple[str, ...] = ()
    allow_countries: tuple[str, ...] = ()
    deny_countries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for pattern in self.repos:
            if not REPO_PATTERN_RE.fullmatch(pattern):
                raise InvalidSetting("repos", f"has a bad entry: {pattern!r} is not a repo key or a pattern of them")
        for name in ("allow_cidrs", "deny_cidrs"):
            for cidr in getattr(self, name):
                try:
                    parse_network(cidr)
                except ValueError as exc:
                    raise InvalidSetting(name, f"has a bad entry: {exc}") from None
        for name in ("allow_countries", "deny_countries"):
            for code in getattr(self, name):
                if not COUNTRY_RE.fullmatch(code):
                    raise InvalidSetting(
                        name, f"has a bad entry: {code!r} is not an ISO 3166-1 alpha-2 code such as 'US'"
                    )
        if not any(getattr(self, name) for name in LISTS):
            raise InvalidSetting("repos", "belongs to a rule without any of " + ", ".join(LISTS))
        if any(len(getattr(self, name)) > MAX_LIST for name in ("repos", *LISTS)):
            raise InvalidSetting("repos", f"belongs to a rule with a list longer than {MAX_LIST}")

    @property
    def uses_geo(self) -> bool:
        return bool(self.allow_countries or self.deny_countries)

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(value) for name, value in dataclasses.asdict(self).items()}


def rules_from_json(value: Any) -> tuple[RuleSpec, ...]:
    """The rules API's ``rules`` list; ValueError naming the bad entry and field."""
    if not isinstance(value, list):
        raise ValueError("'rules' must be a list of rule objects")
    if len(value) > MAX_RULES:
        raise ValueError(f"'rules' may hold at most {MAX_RULES} rules")
    specs = []
    fields = {f.name for f in dataclasses.fields(RuleSpec)}
    for index, item in enumerate(value):
        where = f"rules[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"'{where}' must be an object")
        unknown = sorted(set(item) - fields)
        if unknown:
            raise ValueError(f"'{where}.{unknown[0]}' is not a rule field; expected {', '.join(sorted(fields))}")
        for name, entries in item.items():
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError(f"'{where}.{name}' must be a list of strings")
        try:
            specs.append(RuleSpec(**{name: tuple(entries) for name, entries in item.items()}))
        except InvalidSetting as exc:
            raise ValueError(f"'{where}.{exc.field}' {exc.problem}") from None
    return tuple(specs)


@dataclass(frozen=True)
class Denial:
    """Why a request was refused: ``rule`` for the audit trail, ``message`` for the client."""

    rule: str
    message: str


ADDRESS_REFUSED = "Access from your network address is not allowed"
COUNTRY_REFUSED = "Access from your location is not allowed"


class _Networks:
    """CIDRs as (network, mask) integers per IP version: a membership test is a few integer ops."""

    def __init__(self, networks: list[IPNetwork]) -> None:
        self.networks = networks
        self._v4 = [(int(n.network_address), int(n.netmask), n) for n in networks if isinstance(n, IPv4Network)]
        self._v6 = [(int(n.network_address), int(n.netmask), n) for n in networks if not isinstance(n, IPv4Network)]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def match(self, address: IPAddress) -> IPNetwork | None:
        value = int(address)
        for network, mask, original in self._v4 if isinstance(address, IPv4Address) else self._v6:
            if value & mask == network:
                return original
        return None


class Rule:
    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self.label = "[" + ",".join(spec.repos) + "]" if spec.repos else "[global]"
        self._repos = re.compile("|".join(fnmatch.translate(p) for p in spec.repos)) if spec.repos else None
        self.allow = _Networks([parse_network(c) for c in spec.allow_cidrs])
        self.deny = _Networks([parse_network(c) for c in spec.deny_cidrs])
        self.allow_countries = frozenset(spec.allow_countries)
        self.deny_countries = frozenset(spec.deny_countries)
        self.has_ip = bool(self.allow or self.deny)
        self.has_geo = spec.uses_geo

    def covers(self, repo: str | None) -> bool:
        if self._repos is None:
            return True
        return repo is not None and self._repos.fullmatch(repo) is not None


class RuleSet:
    """An immutable, checked set of rules; ``check`` answers the first refusal or None."""

    def __init__(self, specs: tuple[RuleSpec, ...], geo_unknown: str = "deny") -> None:
        if geo_unknown not in GEO_UNKNOWN:
            raise ValueError(f"geo_unknown must be one of {', '.join(GEO_UNKNOWN)}")
        self.specs = specs
        self.geo_unknown = geo_unknown
        self._rules = [Rule(spec) for spec in specs]
        self._by_repo: dict[str | None, tuple[Rule, ...]] = {}
        self.uses_geo = any(rule.has_geo for rule in self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def applicable(self, repo: str | None) -> tuple[Rule, ...]:
        found = self._by_repo.get(repo)
        if found is None:
            found = tuple(rule for rule in self._rules if rule.covers(repo))
            if len(self._by_repo) >= MAX_CACHED_REPOS:
                self._by_repo.clear()
            self._by_repo[repo] = found
        return found

    def check(self, repo: str | None, client: IPAddress | None, country: str | None) -> Denial | None:
        rules = self.applicable(repo)
        if not rules:
            return None
        return self._check_ip(rules, client) or self._check_geo(rules, country)

    def _check_ip(self, rules: tuple[Rule, ...], client: IPAddress | None) -> Denial | None:
        for rule in rules:
            if rule.has_ip and client is None:
                return Denial(f"ip-unknown {rule.label}", ADDRESS_REFUSED)
            if client is not None and (network := rule.deny.match(client)) is not None:
                return Denial(f"ip-deny {network} {rule.label}", ADDRESS_REFUSED)
        for rule in rules:
            if client is not None and rule.allow and rule.allow.match(client) is None:
                return Denial(f"ip-allow {rule.label}", ADDRESS_REFUSED)
        return None

    def _check_geo(self, rules: tuple[Rule, ...], country: str | None) -> Denial | None:
        for rule in rules:
            if not rule.has_geo:
                continue
            if country is None:
                if self.geo_unknown == "deny":
                    return Denial(f"geo-unknown {rule.label}", COUNTRY_REFUSED)
            elif country in rule.deny_countries:
                return Denial(f"geo-deny {country} {rule.label}", COUNTRY_REFUSED)
        for rule in rules:
            if country is not None and rule.allow_countries and country not in rule.allow_countries:
                return Denial(f"geo-allow {country} {rule.label}", COUNTRY_REFUSED)
        return None


@dataclass(frozen=True)
class StoredRules:
    specs: tuple[RuleSpec, ...]
    updated: int
    updated_by: str


class RuleBook:
    """The rule set in force, replaced atomically; API changes persist in the edge's database.

    Requests read ``current`` without a lock: a replacement is one assignment on the
    event loop, so a request sees the old set or the new one, never a mix.
    """

    def __init__(self, database: Database, configured: tuple[RuleSpec, ...], geo_unknown: str) -> None:
        self._database = database
        self.configured = configured
        self.geo_unknown = geo_unknown
        self.current = RuleSet(configured, geo_unknown)
        self.stored: StoredRules | None = None
        database.copies.register(self.load)  # another process changed the rules

    async def load(self) -> None:
        """At start: the rules last stored through the API, else the settings file's."""
        stored = await self._database.read(self._read)
        self._use(stored)

    def _use(self, stored: StoredRules | None) -> None:
        specs = stored.specs if stored is not None else self.configured
        self.current = RuleSet(specs, self.geo_unknown)
        self.stored = stored

    def _read(self) -> StoredRules | None:
        row = self._database.db.execute("SELECT rules, updated, updated_by FROM access_rules WHERE id = 1").fetchone()
        if row is None:
            return None
        return StoredRules(rules_from_json(json.loads(row[0])), row[1], row[2])

    async def replace(self, specs: tuple[RuleSpec, ...], by: str) -> None:
        """Store and apply a new rule set; the database write happens first, so a failed one changes nothing."""
        RuleSet(specs, self.geo_unknown)  # compiles, or raises before anything is written
        stored = StoredRules(specs, now_ms(), by)
        text = json.dumps([spec.to_json() for spec in specs], sort_keys=True)
        await self._database.run(
            self._database.db.execute,
            "INSERT INTO access_rules (id, rules, updated, updated_by) VALUES (1, :rules, :updated, :updated_by)"
            " ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, updated = excluded.updated,"
            " updated_by = excluded.updated_by",
            {"rules": text, "updated": stored.updated, "updated_by": stored.updated_by},
        )
        self._use(stored)
        self._database.changed()

    async def reset(self) -> None:
        """Forget the stored set: the settings file's rules apply again."""
        await self._database.run(self._database.db.execute, "DELETE FROM access_rules WHERE id = 1")
        self._use(None)
        self._database.changed()
