"""The AQL subset JFrog CLI generates: ``items.find({...})``, parsed to a predicate and scopes.

See ``distribution.specs`` for the semantics; this module only parses and evaluates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from wire.errors import InvalidPath
from wire.jsonstrict import JsonRefused, loads_prefix
from wire.paths import check_artifact_path, check_repo_key

from .matching import ANY_SCOPE, Scope, SpecError, Wildcard, has_wildcard

MAX_AQL_DEPTH = 32
MAX_SCOPES = 64  # beyond this, scopes are widened: walking more is cheaper than tracking them
FIELD_OPERATORS = ("$eq", "$ne", "$match", "$nmatch")

_AQL_HEAD = re.compile(r"\s*(\w+)\s*\.\s*find\s*\(\s*")
_AQL_CLOSE = re.compile(r"\s*\)")
_AQL_INCLUDE = re.compile(r'\s*\.\s*include\s*\(\s*(?:"[^"\\\x00-\x1f]*"(?:\s*,\s*"[^"\\\x00-\x1f]*")*)?\s*\)')
_AQL_METHOD = re.compile(r"\s*\.\s*(\w+)\s*\(")

# (repo, path as AQL says it: the folder or ".", name, the file's properties)
Item = tuple[str, str, str, Mapping[str, list[str]]]
Predicate = Callable[[Item], bool]
Scopes = frozenset[Scope]
FIELD_INDEX = {"repo": 0, "path": 1, "name": 2}


def parse_aql(text: str, where: str) -> tuple[Callable[[str, str, Mapping[str, list[str]]], bool], tuple[Scope, ...]]:
    head = _AQL_HEAD.match(text)
    if head is None:
        raise SpecError(f"{where}: must be items.find({{...}})")
    if head.group(1) != "items":
        raise SpecError(f"{where}: domain {head.group(1)!r} is not supported (only items.find(...))")
    pos = head.end()
    criteria: object = {}
    if not text.startswith(")", pos):
        try:
            criteria, pos = loads_prefix(text, pos)
        except JsonRefused as exc:
            raise SpecError(f"{where}: malformed JSON: {exc.problem}") from None
    close = _AQL_CLOSE.match(text, pos)
    if close is None:
        raise SpecError(f"{where}: expected ')' after the criteria at character {pos}")
    pos = close.end()
    while (include := _AQL_INCLUDE.match(text, pos)) is not None:
        pos = include.end()
    if text[pos:].strip():
        method = _AQL_METHOD.match(text, pos)
        if method is not None:
            raise SpecError(f"{where}: .{method.group(1)}(...) is not supported (only .include(...) may follow)")
        raise SpecError(f"{where}: unexpected text after items.find(...): {text[pos : pos + 40].strip()!r}")
    predicate, scopes = _criteria(criteria, "", where, 0)

    def matches(repo: str, path: str, properties: Mapping[str, list[str]]) -> bool:
        folder, _, name = path.rpartition("/")
        return predicate((repo, folder or ".", name, properties))

    return matches, _sorted_scopes(scopes)


def _criteria(obj: object, loc: str, where: str, depth: int) -> tuple[Predicate, Scopes]:
    if not isinstance(obj, dict):
        raise SpecError(f"{where}: {loc or 'criteria'}: must be an object")
    if depth > MAX_AQL_DEPTH:
        raise SpecError(f"{where}: {loc}: criteria nest deeper than {MAX_AQL_DEPTH} levels")
    parts = [_criterion(key, value, f"{loc}.{key}" if loc else key, where, depth) for key, value in obj.items()]
    return _all_of(parts)


def _criterion(key: str, value: object, loc: str, where: str, depth: int) -> tuple[Predicate, Scopes]:
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise SpecError(f"{where}: {loc}: must be a non-empty list of objects")
        parts = [_criteria(item, f"{loc}[{i}]", where, depth + 1) for i, item in enumerate(value)]
        return _all_of(parts) if key == "$and" else _any_of(parts)
    if key.startswith("$"):
        raise SpecError(f"{where}: {loc}: operator {key} is not supported here (supported: $and, $or)")
    if key.startswith("@"):
        return _property_criterion(key[1:], value, loc, where)
    if key == "type":
        if value != "file" and value != {"$eq": "file"}:
            raise SpecError(f"{where}: {loc}: only type 'file' is supported")
        return (lambda item: True), frozenset({ANY_SCOPE})
    if key not in FIELD_INDEX:
        raise SpecError(f"{where}: {loc}: field {key!r} is not supported (supported: repo, path, name, type)")
    return _all_of(
        [
            (_condition(FIELD_INDEX[key], op, operand), _condition_scopes(key, op, operand))
            for op, operand in _operations(value, loc, where)
        ]
    )


def _operations(value: object, loc: str, where: str) -> list[tuple[str, str]]:
    """A criterion's ``(operator, operand)`` pairs: a bare string is ``$eq``."""
    if isinstance(value, str):
        value = {"$eq": value}
    if not isinstance(value, dict) or not value:
        raise SpecError(f'{where}: {loc}: value must be a string or an object like {{"$match": "*.tgz"}}')
    for op, operand in value.items():
        if op not in FIELD_OPERATORS:
            raise SpecError(f"{where}: {loc}: operator {op} is not supported (supported: {', '.join(FIELD_OPERATORS)})")
        if not isinstance(operand, str):
            raise SpecError(f"{where}: {loc}.{op}: value must be a string, not {type(operand).__name__}")
    return list(value.items())


def _property_criterion(key: str, value: object, loc: str, where: str) -> tuple[Predicate, Scopes]:
    """``"@RC1-Approved": "true"``: ``$eq``/``$match`` hold when one of the file's values of the
    key does, ``$ne``/``$nmatch`` when none does (a file without the key among them)."""
    if not key:
        raise SpecError(f"{where}: {loc}: a property criterion needs a key after '@'")
    parts: list[tuple[Predicate, Scopes]] = []
    for op, operand in _operations(value, loc, where):
        held = any if op in ("$eq", "$match") else all
        parts.append((_values_pass(key, _value_test(op, operand), held), frozenset({ANY_SCOPE})))
    return _all_of(parts)


def _values_pass(key: str, test: Callable[[str], bool], held: Callable[[Iterable[bool]], bool]) -> Predicate:
    """Whether ``held`` (``any`` or ``all``) of the file's values of ``key`` pass ``test``."""
    return lambda item: held(map(test, item[3].get(key, ())))


def _value_test(op: str, operand: str) -> Callable[[str], bool]:
    if op == "$eq":
        return lambda value: value == operand
    if op == "$ne":
        return lambda value: value != operand
    wildcard = Wildcard(operand)
    if op == "$match":
        return wildcard.matches
    return lambda value: not wildcard.matches(value)


def _condition(index: int, op: str, operand: str) -> Predicate:
    test = _value_test(op, operand)
    return lambda item: test(item[index])  # type: ignore[arg-type]


def _condition_scopes(field_name: str, op: str, operand: str) -> Scopes:
    """Only a positive constraint narrows; one that no stored item can meet gives no scope."""
    if op not in ("$eq", "$match") or field_name == "name":
        return frozenset({ANY_SCOPE})
    literal = op == "$eq" or not has_wildcard(operand)
    if field_name == "repo":
        if not literal:
            return frozenset({ANY_SCOPE})
        return frozenset({Scope(operand, "")}) if _is_valid(check_repo_key, operand) else frozenset()
    if literal:
        folder = "" if operand == "." else operand
    else:
        first = min(i for i in (operand.find("*"), operand.find("?")) if i >= 0)
        folder = operand[:first].rpartition("/")[0]
    return frozenset({Scope(None, folder)}) if not folder or _is_valid(check_artifact_path, folder) else frozenset()


def _is_valid(check: Callable[[str], str], value: str) -> bool:
    try:
        check(value)
    except InvalidPath:
        return False
    return True


def _all_of(parts: list[tuple[Predicate, Scopes]]) -> tuple[Predicate, Scopes]:
    predicates = [p for p, _ in parts]
    scopes: Scopes = frozenset({ANY_SCOPE})
    for _, more in parts:
        met = (_intersect(a, b) for a in scopes for b in more)
        scopes = _bounded(frozenset(s for s in met if s is not None))
    if len(predicates) == 1:
        return predicates[0], scopes
    return (lambda item: all(p(item) for p in predicates)), scopes


def _any_of(parts: list[tuple[Predicate, Scopes]]) -> tuple[Predicate, Scopes]:
    predicates = [p for p, _ in parts]
    scopes = _bounded(frozenset().union(*(s for _, s in parts)))
    if len(predicates) == 1:
        return predicates[0], scopes
    return (lambda item: any(p(item) for p in predicates)), scopes


def _within(inner: str, outer: str) -> bool:
    return not outer or inner == outer or inner.startswith(outer + "/")


def _contains(outer: Scope, inner: Scope) -> bool:
    return (outer.repo is None or outer.repo == inner.repo) and _within(inner.folder, outer.folder)


def _intersect(a: Scope, b: Scope) -> Scope | None:
    if a.repo is not None and b.repo is not None and a.repo != b.repo:
        return None
    repo = a.repo if a.repo is not None else b.repo
    if _within(a.folder, b.folder):
        return Scope(repo, a.folder)
    if _within(b.folder, a.folder):
        return Scope(repo, b.folder)
    return None


def _bounded(scopes: Scopes) -> Scopes:
    """Drop scopes inside others; past MAX_SCOPES, widen to whole repos, then to everything."""
    if len(scopes) > MAX_SCOPES:
        repos = {s.repo for s in scopes}
        if None in repos or len(repos) > MAX_SCOPES:
            return frozenset({ANY_SCOPE})
        scopes = frozenset(Scope(repo, "") for repo in repos)
    return frozenset(s for s in scopes if not any(o != s and _contains(o, s) for o in scopes))


def _sorted_scopes(scopes: Scopes) -> tuple[Scope, ...]:
    return tuple(sorted(scopes, key=lambda s: (s.repo is not None, s.repo or "", s.folder)))
