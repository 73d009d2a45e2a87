"""Release Bundle specs: which artifacts each query selects, and where they land.

A spec is JFrog Distribution's v1 ``{"queries": [...]}``; each query names its artifacts
in one of two ways:

``pattern``: ``"repo/glob"``. The repo is literal. The glob works on the path inside
the repo, segment by segment: ``*`` matches any run of characters within one segment,
``?`` one character other than ``/``, and a whole ``**`` segment any number of segments
(``a/**/b`` matches ``a/b`` and ``a/x/y/b``; a trailing ``a/**`` matches every file
below ``a``). Everything else is literal: dots, brackets, braces, parentheses (JFrog
CLI's ``(*)`` placeholders are not ours; use ``mappings``). No character classes.

``aql``: the subset JFrog CLI generates, ``items.find({...})`` optionally followed by
``.include("...", ...)`` (ignored: we always record the fields a bundle needs). Fields
``repo``, ``path`` (the folder inside the repo, ``"."`` at the root) and ``name``, with
``$eq`` (or a bare string), ``$ne``, ``$match``, ``$nmatch``; ``$and``/``$or`` lists, and
several keys in one object meaning AND; ``"type": "file"``. As in AQL, ``$match`` is a
whole-value wildcard where ``*`` matches any run of characters *including* ``/`` and
``?`` exactly one character: JFrog CLI relies on that, sending ``{"path": {"$match":
"app/1.4.0/*"}}`` for everything below ``app/1.4.0``. ``$ne``/``$nmatch`` are accepted
because JFrog CLI sends ``"path": {"$ne": "."}`` for most patterns and ``$nmatch`` for
exclusions. Matching is case-sensitive. Property criteria ``"@key"`` take the same
operators over a file's values of that key (``distribution.aql``).

``props`` (either kind, JFrog CLI's file spec field): ``"RC1-Approved=true;stage=qa,prod"``
in Artifactory's property syntax; a file is selected only if, for every key listed, it
holds one of the values.

Wildcards are matched chunk by chunk, never through a backtracking regex, so no pattern
(``*a*a*a*b``) can make matching slow. Mapping inputs are real regular expressions
(Python's ``re``, with Java's ``(?<name>...)`` accepted): run ``Query.target`` off the
event loop like any other per-artifact work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from repository.policy import EDGE_UPLOADS_REPO
from repository.property_syntax import PropertySyntaxError, parse_properties
from wire.errors import InvalidPath
from wire.paths import check_artifact_path, check_repo_key

from .aql import parse_aql
from .matching import Scope, SpecError, Wildcard, has_wildcard

MAX_QUERY_TEXT_BYTES = 8 * 1024
MAX_QUERY_NAME = 128
MAX_MAPPINGS = 100
MAX_MAPPING_INPUT = 1024
MAX_MAPPING_OUTPUT = 1024
MAX_ADDED_PROPS = 100
MAX_PROP_KEY = 255
MAX_PROP_VALUE = 1024
MAX_PROP_VALUES = 100

QUERY_KEYS = ("query_name", "pattern", "aql", "props", "mappings", "added_props", "exclude_props_patterns")


@dataclass(frozen=True)
class _GroupRef:
    ref: int | str


@dataclass(frozen=True)
class PathMapping:
    """``input`` must match the whole ``repo/path``; ``output`` is JFrog's template
    (``$1``, ``${1}``, ``${name}``, ``\\$`` for a literal ``$``)."""

    input: re.Pattern[str]
    output: str
    _template: tuple[str | _GroupRef, ...] = field(repr=False, compare=False)

    def apply(self, source: str) -> str | None:
        """The mapped ``repo/path``, or None when ``input`` does not match ``source``."""
        match = self.input.fullmatch(source)
        if match is None:
            return None
        return "".join(p if isinstance(p, str) else (match.group(p.ref) or "") for p in self._template)


@dataclass(frozen=True)
class Query:
    name: str
    scopes: tuple[Scope, ...]
    mappings: tuple[PathMapping, ...]
    added_props: dict[str, tuple[str, ...]] = field(hash=False)
    _predicate: Callable[[str, str, Mapping[str, list[str]]], bool] = field(repr=False, compare=False, hash=False)
    # The file spec's ``props``: each key must have one of its values.
    props: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def matches(self, repo: str, path: str, properties: Mapping[str, list[str]] | None = None) -> bool:
        """Whether the file at ``path`` inside ``repo`` (``"app/1.4.0/app.tgz"``) with these
        properties is selected."""
        held = properties or {}
        if any(not set(values).intersection(held.get(key, ())) for key, values in self.props.items()):
            return False
        return self._predicate(repo, path, held)

    def target(self, repo: str, path: str) -> str:
        """``repo/path`` after the first mapping whose input matches it (unchanged if none),
        checked to be a safe ``repo/path`` outside an edge's uploads repo; SpecError otherwise."""
        source = f"{repo}/{path}"
        result = source
        for mapping in self.mappings:
            mapped = mapping.apply(source)
            if mapped is not None:
                result = mapped
                break
        target_repo, _, target_path = result.partition("/")
        try:
            check_repo_key(target_repo)
            check_artifact_path(target_path)
        except InvalidPath as exc:
            raise SpecError(
                f"query {self.name!r}: mapping of {source!r} produces unsafe target path {result!r} ({exc.message})"
            ) from None
        if target_repo == EDGE_UPLOADS_REPO:  # deployers write there: an edge refuses such a bundle
            raise SpecError(
                f"query {self.name!r}: target path {result!r} of {source!r} is in {EDGE_UPLOADS_REPO},"
                " an edge's uploads repository; release bundle content cannot go there"
            )
        return result


def parse_spec(spec: object, *, max_queries: int = 100) -> tuple[Query, ...]:
    """Validate a v1 ``spec`` object (already JSON-decoded) into queries; SpecError names the bad part."""
    if not isinstance(spec, dict):
        raise SpecError("spec must be an object with a 'queries' list")
    _refuse_unknown_keys(spec, ("queries",), "spec")
    queries = spec.get("queries")
    if queries is None or queries == []:
        raise SpecError("spec has no queries")
    if not isinstance(queries, list):
        raise SpecError("spec.queries must be a list")
    if len(queries) > max_queries:
        raise SpecError(f"spec has {len(queries)} queries; at most {max_queries} are allowed")
    parsed = tuple(_parse_query(q, i) for i, q in enumerate(queries))
    seen: dict[str, int] = {}
    for i, query in enumerate(parsed):
        if query.name in seen:
            raise SpecError(f"queries[{i}].query_name: {query.name!r} is already used by queries[{seen[query.name]}]")
        seen[query.name] = i
    return parsed


class NestedTargets:
    """Refuse a target inside another target's file (an edge could publish neither), for
    targets given in sorted order, one at a time; two sources at one target are refused as
    they are staged (``BundleStore.stage``). Holds only the targets that are string prefixes
    of the last: in that order, all a target inside another target's file can be checked
    against (the targets between a file and what is inside it, like ``a-x`` between ``a``
    and ``a/b``, all start with it)."""

    def __init__(self) -> None:
        self._open: list[tuple[str, str]] = []  # (target, source)

    def add(self, source: str, target: str) -> None:
        while self._open and not target.startswith(self._open[-1][0]):
            self._open.pop()
        for file, other in self._open:
            if target.startswith(file + "/"):
                raise SpecError(f"mappings make {source!r} and {other!r} collide at target path {target!r}")
        self._open.append((target, source))


# -- queries -------------------------------------------------------------------------


def _parse_query(raw: object, index: int) -> Query:
    where = f"queries[{index}]"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be an object")
    _refuse_unknown_keys(raw, QUERY_KEYS, where)
    name = raw.get("query_name")
    if name is None:
        name = f"query-{index}"
    elif not isinstance(name, str) or not name or len(name) > MAX_QUERY_NAME:
        raise SpecError(f"{where}.query_name: must be a non-empty string of at most {MAX_QUERY_NAME} characters")
    if ("pattern" in raw) == ("aql" in raw):
        raise SpecError(f"{where}: give exactly one of 'pattern' or 'aql'")
    kind = "pattern" if "pattern" in raw else "aql"
    text = raw[kind]
    if not isinstance(text, str) or not text:
        raise SpecError(f"{where}.{kind}: must be a non-empty string")
    if len(text.encode("utf-8")) > MAX_QUERY_TEXT_BYTES:
        raise SpecError(f"{where}.{kind}: longer than {MAX_QUERY_TEXT_BYTES} bytes")
    if kind == "pattern":
        predicate, scopes = _parse_pattern(text, f"{where}.pattern")
    else:
        predicate, scopes = parse_aql(text, f"{where}.aql")
    if raw.get("exclude_props_patterns") not in (None, []):
        raise SpecError(f"{where}.exclude_props_patterns: not supported (only an empty list is accepted)")
    return Query(
        name=name,
        scopes=scopes,
        mappings=_parse_mappings(raw.get("mappings"), f"{where}.mappings"),
        added_props=_parse_added_props(raw.get("added_props"), f"{where}.added_props"),
        _predicate=predicate,
        props=_parse_props(raw.get("props"), f"{where}.props"),
    )


def _parse_props(raw: object, where: str) -> dict[str, tuple[str, ...]]:
    """JFrog CLI's file spec ``"props": "a=1;b=2,3"``: every key listed must hold one of its values."""
    if raw is None:
        return {}
    if not isinstance(raw, str) or not raw:
        raise SpecError(f'{where}: must be a non-empty string like "RC1-Approved=true;stage=qa"')
    try:
        props = parse_properties(raw)
    except PropertySyntaxError as exc:
        raise SpecError(f"{where}: {exc.message}") from None
    return {key: tuple(values) for key, values in props.items()}


def _refuse_unknown_keys(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _list_of(value: object, limit: int, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where}: must be a list")
    if len(value) > limit:
        raise SpecError(f"{where}: has {len(value)} entries; at most {limit} are allowed")
    return value


def _parse_added_props(raw: object, where: str) -> dict[str, tuple[str, ...]]:
    props: dict[str, list[str]] = {}
    for i, entry in enumerate(_list_of(raw, MAX_ADDED_PROPS, where)):
        loc = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f'{loc}: must be an object like {{"key": "k", "values": ["v"]}}')
        _refuse_unknown_keys(entry, ("key", "values"), loc)
        key, values = entry.get("key"), entry.get("values")
        if not isinstance(key, str) or not key or len(key) > MAX_PROP_KEY or not key.isprintable():
            raise SpecError(f"{loc}.key: must be a non-empty printable string of at most {MAX_PROP_KEY} characters")
        if not isinstance(values, list) or len(values) > MAX_PROP_VALUES:
            raise SpecError(f"{loc}.values: must be a list of at most {MAX_PROP_VALUES} strings")
        merged = props.setdefault(key, [])
        for j, value in enumerate(values):
            if not isinstance(value, str) or len(value) > MAX_PROP_VALUE:
                raise SpecError(f"{loc}.values[{j}]: must be a string of at most {MAX_PROP_VALUE} characters")
            if value not in merged:
                merged.append(value)
    return {key: tuple(values) for key, values in props.items()}


# -- mappings ------------------------------------------------------------------------

_BRACED_GROUP = re.compile(r"\{(\d+|[A-Za-z_]\w*)\}")
# Java's named group ``(?<name>`` (not a lookbehind), when the '(' is not escaped.
_JAVA_NAMED_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<([A-Za-z]\w*)>")


def _parse_mappings(raw: object, where: str) -> tuple[PathMapping, ...]:
    mappings = []
    for i, entry in enumerate(_list_of(raw, MAX_MAPPINGS, where)):
        loc = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f'{loc}: must be an object like {{"input": "regex", "output": "$1"}}')
        _refuse_unknown_keys(entry, ("input", "output"), loc)
        source, output = entry.get("input"), entry.get("output")
        if not isinstance(source, str) or not source or len(source) > MAX_MAPPING_INPUT:
            raise SpecError(f"{loc}.input: must be a non-empty regular expression of at most {MAX_MAPPING_INPUT} chars")
        if not isinstance(output, str) or not output or len(output) > MAX_MAPPING_OUTPUT:
            raise SpecError(f"{loc}.output: must be a non-empty string of at most {MAX_MAPPING_OUTPUT} characters")
        try:
            pattern = re.compile(_JAVA_NAMED_GROUP.sub(r"\1(?P<\2>", source))
        except (re.error, RecursionError, OverflowError) as exc:
            raise SpecError(f"{loc}.input: invalid regular expression: {exc}") from None
        mappings.append(PathMapping(pattern, output, _parse_template(output, pattern, f"{loc}.output")))
    return tuple(mappings)


def _parse_template(output: str, pattern: re.Pattern[str], where: str) -> tuple[str | _GroupRef, ...]:
    """Java's replacement syntax: ``$N`` (more digits while they name a group), ``${N}``,
    ``${name}``; a backslash makes the next character literal."""
    parts: list[str | _GroupRef] = []
    literal: list[str] = []
    i = 0
    while i < len(output):
        char = output[i]
        if char == "\\":
            if i + 1 == len(output):
                raise SpecError(f"{where}: ends with a lone backslash")
            literal.append(output[i + 1])
            i += 2
            continue
        if char != "$":
            literal.append(char)
            i += 1
            continue
        braced = _BRACED_GROUP.match(output, i + 1)
        if braced:
            ref: int | str = int(braced.group(1)) if braced.group(1).isdigit() else braced.group(1)
            i = braced.end()
        elif i + 1 < len(output) and output[i + 1].isdigit():
            ref, i = int(output[i + 1]), i + 2
            while i < len(output) and output[i].isdigit() and ref * 10 + int(output[i]) <= pattern.groups:
                ref, i = ref * 10 + int(output[i]), i + 1
        else:
            raise SpecError(f"{where}: '$' must be followed by a group ($1, ${{1}}, ${{name}}); write \\$ for a '$'")
        if isinstance(ref, int) and ref > pattern.groups:
            raise SpecError(f"{where}: group ${ref} does not exist (the input has {pattern.groups} groups)")
        if isinstance(ref, str) and ref not in pattern.groupindex:
            raise SpecError(f"{where}: group ${{{ref}}} does not exist in the input")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_GroupRef(ref))
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


# -- wildcards and patterns ------------------------------------------------------------


class _Glob:
    """A path glob matched segment by segment; ``**`` is a star over whole segments."""

    def __init__(self, glob: str) -> None:
        segments = glob.split("/")
        if segments[-1] == "**":
            segments.append("*")  # 'a/**' selects files below a, never a file named 'a'
        items: list[Wildcard | None] = []  # None stands for '**'
        for segment in segments:
            if segment != "**":
                items.append(Wildcard(segment))
            elif not items or items[-1] is not None:
                items.append(None)
        self._items = items

    def matches(self, path: str) -> bool:
        """The classic star matcher over segments, backtracking only to the last '**'."""
        names, items = path.split("/"), self._items
        p = t = 0
        star_p, star_t = -1, 0
        while t < len(names):
            if p < len(items) and items[p] is None:
                star_p, star_t, p = p, t, p + 1
                continue
            item = items[p] if p < len(items) else None
            if item is not None and item.matches(names[t]):
                p, t = p + 1, t + 1
            elif star_p >= 0:
                star_t += 1
                p, t = star_p + 1, star_t
            else:
                return False
        return all(item is None for item in items[p:])


def _parse_pattern(
    text: str, where: str
) -> tuple[Callable[[str, str, Mapping[str, list[str]]], bool], tuple[Scope, ...]]:
    repo, slash, glob = text.partition("/")
    if not slash or not glob:
        raise SpecError(f"{where}: must look like 'repo/path', e.g. 'releases-local/app/1.4.0/**'")
    try:
        check_repo_key(repo)
    except InvalidPath:
        raise SpecError(f"{where}: {repo!r} is not a repository key (the repository part is literal)") from None
    if glob.endswith("/"):
        raise SpecError(f"{where}: ends with '/'; add '**' to select every file below that folder")
    try:
        check_artifact_path(glob)
    except InvalidPath as exc:
        reason = exc.message.removeprefix("Invalid path: ")
        raise SpecError(f"{where}: invalid path {glob!r}: {reason}") from None
    segments = glob.split("/")
    literal = next((i for i, s in enumerate(segments) if has_wildcard(s)), len(segments) - 1)
    folder = "/".join(segments[: min(literal, len(segments) - 1)])
    matcher = _Glob(glob)
    return (lambda r, path, _props: r == repo and matcher.matches(path)), (Scope(repo, folder),)
