"""Distribution rules: which registered edges a distribution (or a delete) goes to.

A rule is ``{"site_name","city_name","country_codes":[...]}`` with shell-style wildcards
(``*``, ``?``, ``[..]``) compared without regard to case; a missing field is ``*``. An
edge is a target when any rule matches it: site and city match and any country matches.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from repository.errors import BadRequest, Conflict

from .edges import Edge

MAX_RULES = 100
MAX_PATTERN = 256
RULE_FIELDS = ("site_name", "city_name", "country_codes")


@dataclass(frozen=True)
class Rule:
    site_name: str = "*"
    city_name: str = "*"
    country_codes: tuple[str, ...] = ("*",)

    def matches(self, edge: Edge) -> bool:
        return (
            _match(edge.site_name, self.site_name)
            and _match(edge.city_name, self.city_name)
            and any(_match(edge.country_code, c) for c in self.country_codes)
        )

    def as_json(self) -> dict[str, Any]:
        return {"site_name": self.site_name, "city_name": self.city_name, "country_codes": list(self.country_codes)}


def _match(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _pattern(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATTERN:
        raise BadRequest(f"'{where}' must be a non-empty string (wildcards allowed), at most {MAX_PATTERN} characters")
    return value


def parse_rule(value: Any, index: int) -> Rule:
    where = f"distribution_rules[{index}]"
    if not isinstance(value, dict):
        raise BadRequest(f"'{where}' must be an object with site_name, city_name and country_codes")
    unknown = sorted(set(value) - set(RULE_FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}' in '{where}'; a rule has {', '.join(RULE_FIELDS)}")
    countries = value.get("country_codes", ["*"])
    if not isinstance(countries, list) or not countries:
        raise BadRequest(f'\'{where}.country_codes\' must be a non-empty list like ["US", "DE"] or ["*"]')
    return Rule(
        site_name=_pattern(value.get("site_name", "*"), f"{where}.site_name"),
        city_name=_pattern(value.get("city_name", "*"), f"{where}.city_name"),
        country_codes=tuple(_pattern(c, f"{where}.country_codes") for c in countries),
    )


def parse_rules(value: Any) -> tuple[Rule, ...]:
    if value is None:
        raise BadRequest('\'distribution_rules\' is required, e.g. [{"site_name": "*"}] for every edge')
    if not isinstance(value, list) or not value or len(value) > MAX_RULES:
        raise BadRequest(f"'distribution_rules' must be a list of 1 to {MAX_RULES} rules")
    return tuple(parse_rule(v, i) for i, v in enumerate(value))


def select_edges(rules: tuple[Rule, ...], edges: list[Edge]) -> list[Edge]:
    """The edges any rule matches; none is a 409 (nothing to send to, as things stand) that names
    the rules and what is registered."""
    chosen = [e for e in edges if any(r.matches(e) for r in rules)]
    if not chosen:
        asked = "; ".join(
            f"site {r.site_name}, city {r.city_name}, countries {','.join(r.country_codes)}" for r in rules
        )
        known = ", ".join(f"{e.name} ({e.site_name}/{e.city_name}/{e.country_code})" for e in edges) or "none"
        raise Conflict(f"No registered edge matches the distribution rules ({asked}); registered edges: {known}")
    return chosen
