"""Client address, IP rules and geo rules: every line of THREATS.md's "Client address, IP and geo rules".

Fast checks of address parsing and rule evaluation first, then the geo reader on real
.mmdb files, the settings, and finally a real ``edge serve`` configured as the issue
shows, refusing and allowing over HTTP.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from devstack.mmdb import COUNTRIES, write_mmdb
from devstack.services import EdgeProcess
from edge.access.address import ClientAddress, parse_network
from edge.access.geo import GeoDatabase
from edge.access.rules import RuleSet, RuleSpec, rules_from_json
from edge.settings import load_edge_settings
from repository.settings import SettingsError
from tests.access_http import Answer, call, push_bundle
from tests.gpg_keys import KeyFactory

PROXY = "127.0.0.1"
UNTRUSTED_PEER = "127.0.0.2"  # also loopback, but not a trusted proxy
RULES = "/artifactory/api/access/rules"
RELEASE = "releases-local/app/1.4.0/app-1.4.0.tar.gz"
RELEASE_BYTES = b"app 1.4.0 " * 4000
UPLOAD = "artifactory-edge-uploads/tools/setup.sh"
UPLOAD_BYTES = b"#!/bin/sh\necho setup\n"
US, CN, DE_DENIED_NET, CA_REGISTERED, NO_COUNTRY = (
    "198.51.100.7",
    "192.0.2.5",
    "203.0.113.9",
    "100.64.0.5",
    "100.64.1.5",
)
NOT_IN_DB = "10.9.9.9"
WAIT = 30.0  # a hang guard for waits on the edge, not a speed check

ISSUE_CONFIG = """\
[access]
trusted_proxies = ["127.0.0.1/32"]
geoip_database = "{geo}"
geo_unknown = "{unknown}"
[[access.rules]]
repos = ["releases-*"]
allow_countries = ["US", "CA", "DE"]
deny_cidrs = ["203.0.113.0/24"]
"""


def ip(text: str) -> Any:
    return ip_address(text)


# -- client address ----------------------------------------------------------------


BEHIND_PROXY = ClientAddress([parse_network("127.0.0.1/32"), parse_network("10.0.0.0/8")])


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy talking for itself
        ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["198.51.100.7, 10.1.1.1"], "198.51.100.7"),  # past every trusted hop
        ("127.0.0.1", ["192.0.2.5, 198.51.100.7, 10.1.1.1"], "198.51.100.7"),  # a spoofed left part is not reached
        ("127.0.0.1", ["192.0.2.5", "198.51.100.7"], "198.51.100.7"),  # two headers are one list
        ("127.0.0.1", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),  # all trusted: the leftmost
        ("127.0.0.2", ["198.51.100.7"], "127.0.0.2"),  # an untrusted peer's header is ignored
        ("::ffff:127.0.0.1", ["198.51.100.7"], "198.51.100.7"),  # a mapped proxy is still the proxy
        ("127.0.0.1", ["::ffff:192.0.2.5"], "192.0.2.5"),
        ("127.0.0.1", ["198.51.100.7:4711"], "198.51.100.7"),
        ("127.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
        ("127.0.0.1", ["[2001:db8::7]"], "2001:db8::7"),
        ("127.0.0.1", ["2001:db8::7"], "2001:db8::7"),
        ("127.0.0.1", ["fe80::1%eth0"], "fe80::1"),  # the zone id is dropped
        ("::ffff:198.51.100.7", [], "198.51.100.7"),
    ],
)
def test_the_client_is_the_first_untrusted_address_from_the_right(peer: str, xff: list[str], client: str) -> None:
    assert BEHIND_PROXY.resolve(peer, xff) == ip(client)


@pytest.mark.parametrize(
    "xff",
    [
        "unknown",
        "_hidden",
        "010.1.1.1",  # leading zeros: octal to some parsers, refused here
        "198.51.100.7:99999",
        "198.51.100.7:",
        "[2001:db8::7",
        "2001:db8::7]:443",
        "not an address",
        "",
        "1",
        "0x7f000001",
        "198.51.100.7, garbage",  # garbage nearer than the real client: who is it?
    ],
)
def test_garbage_where_the_walk_stops_makes_the_client_unknown(xff: str) -> None:
    assert BEHIND_PROXY.resolve("127.0.0.1", [xff]) is None


def test_garbage_left_of_the_client_is_never_reached() -> None:
    assert BEHIND_PROXY.resolve("127.0.0.1", ["garbage, 198.51.100.7"]) == ip("198.51.100.7")


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (['for="[2001:db8::7]:443"'], "2001:db8::7"),
        (["for=198.51.100.7;proto=https;by=127.0.0.1"], "198.51.100.7"),
        (["For=192.0.2.5, for=198.51.100.7"], "198.51.100.7"),
        (['for=192.0.2.5,for="198.51.100.7:80";host="a,b"'], "198.51.100.7"),
        (["for=198.51.100.7", "for=10.1.1.1"], "198.51.100.7"),
        (["for=unknown"], None),
        (["for=_gazonk"], None),
        (["proto=https"], None),  # an element without for=
        (["for=198.51.100.7;;"], "198.51.100.7"),
        (["for=198.51.100.7;garbage"], None),
        (['for="198.51.100.7'], None),
    ],
)
def test_the_forwarded_header_is_read_when_the_proxies_write_it(forwarded: list[str], client: str | None) -> None:
    address = ClientAddress([parse_network("127.0.0.1/32"), parse_network("10.0.0.0/8")], "Forwarded")
    assert address.resolve("127.0.0.1", forwarded) == (ip(client) if client else None)


def test_a_peer_that_is_not_an_address_is_unknown() -> None:
    assert BEHIND_PROXY.resolve(None, []) is None
    assert BEHIND_PROXY.resolve("", ["198.51.100.7"]) is None


# -- rule evaluation ---------------------------------------------------------------


def rule_set(*rules: dict[str, Any], geo_unknown: str = "deny") -> RuleSet:
    return RuleSet(rules_from_json(list(rules)), geo_unknown)


def refused(rules: RuleSet, client: str | None, repo: str | None = "releases-local", country: str | None = None) -> str:
    denial = rules.check(repo, ip(client) if client else None, country)
    return "" if denial is None else denial.rule


@pytest.mark.parametrize(
    ("allow", "deny", "client", "rule"),
    [
        (["0.0.0.0/0"], [], "198.51.100.7", ""),
        (["0.0.0.0/0"], [], "2001:db8::1", "ip-allow [releases-*]"),  # IPv6 is not in an IPv4 /0
        (["::/0"], [], "2001:db8::1", ""),
        (["198.51.100.7/32"], [], "198.51.100.7", ""),
        (["198.51.100.7/32"], [], "198.51.100.8", "ip-allow [releases-*]"),
        (["2001:db8::1/128"], [], "2001:db8::1", ""),
        (["2001:db8::1/128"], [], "2001:db8::2", "ip-allow [releases-*]"),
        (["198.51.100.0/24"], ["198.51.100.7/32"], "198.51.100.7", "ip-deny 198.51.100.7/32 [releases-*]"),
        (["198.51.100.0/24"], ["198.51.100.7/32"], "198.51.100.8", ""),
        ([], ["203.0.113.0/24"], "198.51.100.7", ""),  # an empty allow list: everyone
        ([], ["203.0.113.0/24"], "2001:db8::1", ""),  # an IPv4 deny list denies no IPv6 client
        ([], ["0.0.0.0/0"], "203.0.113.9", "ip-deny 0.0.0.0/0 [releases-*]"),
        (["198.51.100.0/24"], [], None, "ip-unknown [releases-*]"),
        ([], ["203.0.113.0/24"], None, "ip-unknown [releases-*]"),
    ],
)
def test_cidr_rules_deny_wins_and_an_empty_allow_list_means_everyone(
    allow: list[str], deny: list[str], client: str | None, rule: str
) -> None:
    rules = rule_set({"repos": ["releases-*"], "allow_cidrs": allow, "deny_cidrs": deny})
    assert refused(rules, client) == rule


def test_global_and_per_repo_rules_both_apply_and_a_repo_rule_covers_only_its_repos() -> None:
    rules = rule_set(
        {"allow_cidrs": ["198.51.100.0/24", "203.0.113.0/24"]},
        {"repos": ["releases-*", "prod"], "deny_cidrs": ["203.0.113.0/24"]},
    )
    assert refused(rules, "203.0.113.9", "releases-local").startswith("ip-deny 203.0.113.0/24 [releases-*,prod]")
    assert refused(rules, "203.0.113.9", "prod") != ""
    assert refused(rules, "203.0.113.9", "releases") == ""  # "releases-*" needs the dash
    assert refused(rules, "203.0.113.9", "artifactory-edge-uploads") == ""
    assert refused(rules, "203.0.113.9", None) == ""  # an API call: only the global rule
    assert refused(rules, "192.0.2.5", None) == "ip-allow [global]"
    assert refused(rules, "192.0.2.5", "artifactory-edge-uploads") == "ip-allow [global]"
    assert refused(rules, "198.51.100.7", "Releases-local") == ""  # repo keys are case-sensitive, as the catalog's


@pytest.mark.parametrize(
    ("country", "geo_unknown", "rule"),
    [
        ("US", "deny", ""),
        ("CN", "deny", "geo-allow CN [releases-*]"),
        ("KP", "deny", "geo-deny KP [releases-*]"),
        (None, "deny", "geo-unknown [releases-*]"),
        (None, "allow", ""),
        ("KP", "allow", "geo-deny KP [releases-*]"),
    ],
)
def test_country_rules_with_the_configured_answer_for_unknown_countries(
    country: str | None, geo_unknown: str, rule: str
) -> None:
    rules = rule_set(
        {"repos": ["releases-*"], "allow_countries": ["US", "KP"], "deny_countries": ["KP"]}, geo_unknown=geo_unknown
    )
    assert refused(rules, "198.51.100.7", country=country) == rule
    assert refused(rules, "198.51.100.7", "artifactory-edge-uploads", country) == ""


def test_ip_rules_are_decided_before_geo_rules() -> None:
    rules = rule_set({"repos": ["releases-*"], "deny_cidrs": ["203.0.113.0/24"], "allow_countries": ["US"]})
    assert refused(rules, "203.0.113.9", country="CN") == "ip-deny 203.0.113.0/24 [releases-*]"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"repos": ["x"], "allow_cidrs": ["10.0.0.300/8"]}], "'rules[0].allow_cidrs' has a bad entry"),
        ([{"repos": ["x"], "deny_cidrs": ["10.1.2.3/8"]}], "host bits set"),
        ([{"repos": ["x"], "deny_cidrs": ["010.0.0.0/8"]}], "not a CIDR"),
        ([{"repos": ["x"], "deny_cidrs": ["::ffff:10.0.0.0/104"]}], "write it as IPv4"),
        ([{"repos": ["x"], "deny_cidrs": ["fe80::/10%eth0"]}], "not a CIDR"),
        ([{"deny_cidrs": []}], "without any of"),
        ([{"repos": ["x"], "allow_countries": ["usa"]}], "'rules[0].allow_countries'"),
        ([{"repos": ["x"], "allow_countries": ["us"]}], "ISO 3166-1"),
        ([{"repos": ["x/y"], "allow_countries": ["US"]}], "'rules[0].repos'"),
        ([{"repos": "x", "allow_countries": ["US"]}], "must be a list of strings"),
        ([{"repo": ["x"], "allow_countries": ["US"]}], "'rules[0].repo' is not a rule field"),
        ({"repos": ["x"]}, "must be a list"),
        (["x"], "'rules[0]' must be an object"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(rules: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rules_from_json(rules)


# -- geo database ------------------------------------------------------------------


def geo_at(path: Path, tmp_path: Path) -> GeoDatabase:
    geo = GeoDatabase(path, tmp_path / "snapshots")
    asyncio.run(geo.refresh())
    return geo


def test_countries_come_from_a_real_mmdb_with_the_registered_country_as_fallback(tmp_path: Path) -> None:
    geo = geo_at(write_mmdb(tmp_path / "geo.mmdb"), tmp_path)
    assert geo.loaded
    assert geo.country(ip(US)) == "US"
    assert geo.country(ip(CA_REGISTERED)) == "CA"
    assert geo.country(ip(NO_COUNTRY)) is None
    assert geo.country(ip(NOT_IN_DB)) is None
    assert geo.country(ip("2001:db8:1::5")) == "DE"
    assert geo.country(ip("2001:db8:9::5")) is None
    assert geo.country(None) is None
    assert list((tmp_path / "snapshots").iterdir()) == []  # the snapshot is unlinked once open


def test_an_ipv4_only_database_answers_unknown_for_ipv6_clients(tmp_path: Path) -> None:
    geo = geo_at(write_mmdb(tmp_path / "geo4.mmdb", ip_version=4), tmp_path)
    assert geo.country(ip(US)) == "US"
    assert geo.country(ip("2001:db8:1::5")) is None


def test_a_missing_or_corrupt_database_answers_unknown(tmp_path: Path) -> None:
    assert not geo_at(tmp_path / "missing.mmdb", tmp_path).loaded
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\xab\xcd\xefMaxMind.com" + b"\x00" * 100)
    geo = geo_at(corrupt, tmp_path)
    assert not geo.loaded and geo.country(ip(US)) is None
    truncated = tmp_path / "truncated.mmdb"
    truncated.write_bytes(write_mmdb(tmp_path / "whole.mmdb").read_bytes()[:200])
    assert geo_at(truncated, tmp_path).country(ip(US)) is None


def test_the_database_is_reloaded_when_its_file_changes_even_rewritten_in_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = write_mmdb(tmp_path / "geo.mmdb")
        geo = GeoDatabase(path, tmp_path / "snapshots")
        assert await geo.refresh() and geo.country(ip(CN)) == "CN"
        assert not await geo.refresh()  # unchanged: not read again
        write_mmdb(path, {**COUNTRIES, "192.0.2.0/24": {"country": {"iso_code": "JP"}}})  # replaced by rename
        assert await geo.refresh() and geo.country(ip(CN)) == "JP"
        path.write_bytes(b"garbage" * 10)  # rewritten in place: the loaded snapshot is unaffected until reload
        assert geo.country(ip(CN)) == "JP"
        assert await geo.refresh() and geo.country(ip(CN)) is None
        path.write_bytes(write_mmdb(tmp_path / "other.mmdb").read_bytes())
        assert await geo.refresh() and geo.country(ip(CN)) == "CN"
        path.unlink()
        assert await geo.refresh() and not geo.loaded
        await geo.close()

    asyncio.run(scenario())


# -- settings ----------------------------------------------------------------------


def write_config(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_issue_s_access_settings_load_as_written(tmp_path: Path) -> None:
    config = write_config(tmp_path, ISSUE_CONFIG.format(geo="/var/lib/edge/GeoLite2-Country.mmdb", unknown="deny"))
    access = load_edge_settings(config, env={}).access
    assert access.trusted_proxies == ("127.0.0.1/32",)
    assert access.geoip_database == Path("/var/lib/edge/GeoLite2-Country.mmdb")
    assert access.geo_unknown == "deny"
    assert access.rules == (
        RuleSpec(repos=("releases-*",), allow_countries=("US", "CA", "DE"), deny_cidrs=("203.0.113.0/24",)),
    )


def test_access_settings_come_from_the_environment_rules_as_json() -> None:
    env = {
        "EDGE_ACCESS_TRUSTED_PROXIES": "127.0.0.1/32, ::1",
        "EDGE_ACCESS_GEO_UNKNOWN": "allow",
        "EDGE_ACCESS_RULES": '[{"repos": ["releases-*"], "deny_countries": ["KP"]}]',
        "EDGE_ACCESS_GEOIP_DATABASE": "/var/lib/edge/GeoLite2-Country.mmdb",
        "EDGE_ACCESS_SIGNED_URLS_MAX_LIFETIME": "86400",
    }
    access = load_edge_settings(env=env).access
    assert access.trusted_proxies == ("127.0.0.1/32", "::1")
    assert access.geo_unknown == "allow"
    assert access.rules == (RuleSpec(repos=("releases-*",), deny_countries=("KP",)),)
    assert access.signed_urls.max_lifetime == 86400


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("[access]\ntrusted_proxies = ['127.0.0.1/33']\n", {}, "access.trusted_proxies"),
        ("[access]\ntrusted_proxies = ['10.0.0.1/8']\n", {}, "access.trusted_proxies"),
        ("[access]\ngeo_unknown = 'maybe'\n", {}, "access.geo_unknown"),
        ("[access]\nforwarded_header = 'X-Real-IP'\n", {}, "access.forwarded_header"),
        ("[access]\ngeoip_db = 'x'\n", {}, "access.geoip_db"),
        ("[[access.rules]]\nrepos = ['a']\ndeny_cidrs = ['10.0.0.256/32']\n", {}, "access.rules[0].deny_cidrs"),
        (
            "[[access.rules]]\nrepos = ['a']\ndeny_cidrs = ['10.0.0.0/8']\n"
            "[[access.rules]]\nallow_countries = ['USA']\n",
            {},
            "access.rules[1].allow_countries",
        ),
        ("[[access.rules]]\nrepos = ['a']\nallow_cidrs = '10.0.0.0/8'\n", {}, "access.rules[0].allow_cidrs"),
        ("[[access.rules]]\nrepos = ['a']\nalow_cidrs = ['10.0.0.0/8']\n", {}, "access.rules[0].alow_cidrs"),
        ("[access]\nrules = 3\n", {}, "access.rules"),
        ("[access]\nrules = [3]\n", {}, r"access.rules[0]' must be a table"),
        ("", {"EDGE_ACCESS_RULES": "not json"}, "EDGE_ACCESS_RULES"),
        ("", {"EDGE_ACCESS_RULES": '[{"repos": ["a"], "deny_cidrs": ["x"]}]'}, "EDGE_ACCESS_RULES[0].deny_cidrs"),
        ("[access.signed_urls]\nalgorithm = 'RS256'\n", {}, "access.signed_urls.algorithm"),
        ("[access.signed_urls]\nalgorithm = 'HS256'\n", {}, "access.signed_urls.algorithm"),
        ("[access.signed_urls]\nmax_lifetime = 0\n", {}, "access.signed_urls.max_lifetime"),
        ("[access.signed_urls]\nleeway = -1\n", {}, "access.signed_urls.leeway"),
        ("[access.signed_urls]\nbase_url = 'ftp://x'\n", {}, "access.signed_urls.base_url"),
        ("[[access.signed_urls.keys]]\nkid = 'k'\nsecret = 'short'\n", {}, "access.signed_urls.keys[0].secret"),
        ("[[access.signed_urls.keys]]\nkid = 'k'\npublic_key = 'nope'\n", {}, "access.signed_urls.keys[0].public_key"),
        ("[[access.signed_urls.keys]]\nkid = 'k k'\nsecret = '" + "s" * 40 + "'\n", {}, "keys[0].kid"),
    ],
)
def test_bad_access_settings_are_refused_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], names: str
) -> None:
    escaped = names.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(SettingsError, match=escaped):
        load_edge_settings(write_config(tmp_path, text), env=env)


def test_edge_serve_refuses_a_bad_rule_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[[access.rules]]\nrepos = ['releases-*']\ndeny_cidrs = ['203.0.113.0/33']\n")
    edge = Path(sys.executable).parent / "edge"
    done = subprocess.run(
        [str(edge), "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "access.rules[0].deny_cidrs" in done.stderr
    assert not (tmp_path / "d").exists()


# -- a real edge, configured as the issue shows --------------------------------------


class Site:
    """An edge process with the issue's access settings, a bundle in releases-local and a file in uploads."""

    def __init__(self, edge: EdgeProcess, geo: Path) -> None:
        self.edge, self.geo = edge, geo

    def get(self, target: str, client: str | None = None, **kw: Any) -> Answer:
        headers = dict(kw.pop("headers", {}))
        if client is not None:
            headers["X-Forwarded-For"] = client
        return call(f"{self.edge.artifactory_url}/{target}", headers=headers, **kw)

    def rules(self, method: str = "GET", body: Any = None, token: str | None = None, **kw: Any) -> Answer:
        return call(self.edge.url + RULES, method, body=body, token=token or self.edge.admin_token, **kw)


def start_edge(base: Path, config_text: str) -> EdgeProcess:
    base.mkdir(parents=True, exist_ok=True)
    config = base / "edge.toml"
    config.write_text(config_text)
    return EdgeProcess(base, config=config).start()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, key_factory: KeyFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("access-site")
    geo = write_mmdb(base / "GeoLite2-Country.mmdb")
    edge = start_edge(base / "edge", ISSUE_CONFIG.format(geo=geo, unknown="deny"))
    try:
        key = key_factory.make_key("Release Manager <release@example.com>")
        push_bundle(edge, key_factory, key, "app", "1.4.0", {RELEASE: RELEASE_BYTES})
        put = call(f"{edge.artifactory_url}/{UPLOAD}", "PUT", body=UPLOAD_BYTES, token=edge.admin_token)
        assert put.status == 201, put.body
        yield Site(edge, geo)
    finally:
        code = edge.stop()
        print(f"edge log, last lines:\n{edge.log_tail()}")
    assert code == 0, edge.log_tail()


@pytest.fixture
def issue_rules(site: Site) -> Iterator[Site]:
    """The settings file's rules, whatever an earlier test stored through the API."""
    assert site.rules("DELETE").status == 200
    yield site
    assert site.rules("DELETE").status == 200


@pytest.mark.parametrize("client", [US, CA_REGISTERED, "2001:db8:1::5", "::ffff:198.51.100.7"])
def test_clients_in_allowed_countries_download_from_the_restricted_repo(issue_rules: Site, client: str) -> None:
    got = issue_rules.get(RELEASE, client)
    assert (got.status, got.body) == (200, RELEASE_BYTES)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (CN, "Access from your location is not allowed"),
        ("2001:db8:2::5", "Access from your location is not allowed"),
        ("::ffff:192.0.2.5", "Access from your location is not allowed"),  # mapped: judged as IPv4
        (NO_COUNTRY, "Access from your location is not allowed"),  # geo_unknown = "deny"
        (NOT_IN_DB, "Access from your location is not allowed"),
        ("2001:db8:9::5", "Access from your location is not allowed"),
        (DE_DENIED_NET, "Access from your network address is not allowed"),  # deny_cidrs beats an allowed country
        ("unknown", "Access from your network address is not allowed"),  # no address, and an IP rule applies
    ],
)
def test_clients_the_rules_refuse_get_a_403_artifactory_error(issue_rules: Site, client: str, message: str) -> None:
    got = issue_rules.get(RELEASE, client)
    assert got.status == 403
    assert got.error == message
    head = issue_rules.get(RELEASE, client, method="HEAD")
    assert head.status == 403 and head.body == b""
    storage = issue_rules.get("api/storage/" + RELEASE, client)
    assert storage.status == 403, "the storage API of a restricted repo is restricted too"
    assert issue_rules.get(UPLOAD, client).status == 200, "other repos are not covered by the rule"


def test_a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored(issue_rules: Site) -> None:
    assert issue_rules.get(RELEASE, US, source=PROXY).status == 200
    spoofed = issue_rules.get(RELEASE, US, source=UNTRUSTED_PEER)  # the client is 127.0.0.2: no country
    assert spoofed.status == 403
    assert spoofed.error == "Access from your location is not allowed"


@pytest.mark.parametrize(
    ("xff", "status"),
    [
        (f"{CN}, {US}", 200),  # the client is the rightmost untrusted address
        (f"{US}, {CN}", 403),  # a client cannot hide behind an allowed address it adds on the left
        (f"{US}, 127.0.0.1", 200),  # the trusted hop itself is skipped
        (f"{US}, garbage", 403),  # who the proxy saw is unknown: refused, not guessed
        (f"{US}:4711", 200),
        ("[2001:db8:1::5]:443", 200),
        ("010.064.000.005", 403),  # leading zeros are not an address
    ],
)
def test_a_forwarded_chain_from_the_trusted_proxy_is_walked_right_to_left(
    issue_rules: Site, xff: str, status: int
) -> None:
    assert issue_rules.get(RELEASE, xff).status == status


def test_an_admin_replaces_the_rules_at_run_time_and_they_survive_a_restart(site: Site) -> None:
    site.rules("DELETE")
    assert site.get(RELEASE, CN).status == 403
    before = site.rules().json()
    assert before["source"] == "settings" and before["geoip_database"]["loaded"] is True
    new = [{"repos": ["releases-*"], "allow_countries": ["CN"]}, {"deny_cidrs": ["192.0.2.128/25"]}]
    put = site.rules("PUT", {"rules": new})
    assert put.status == 200, put.body
    assert put.json()["source"] == "api" and put.json()["updated_by"] == "admin"
    assert site.get(RELEASE, CN).status == 200
    assert site.get(RELEASE, US).status == 403
    # a global rule covers API calls too
    assert site.get("api/repositories", "192.0.2.200").status == 403
    assert site.get("api/repositories", CN).status == 200

    site.edge.stop()
    site.edge.start()
    stored = site.rules().json()
    assert stored["source"] == "api" and stored["rules"][0]["allow_countries"] == ["CN"]
    assert site.get(RELEASE, CN).status == 200

    reset = site.rules("DELETE")
    assert reset.status == 200 and reset.json()["source"] == "settings"
    assert site.get(RELEASE, CN).status == 403 and site.get(RELEASE, US).status == 200


@pytest.mark.parametrize(
    "body",
    [
        {"rules": [{"repos": ["releases-*"], "allow_cidrs": ["10.0.0.0/33"]}]},
        {"rules": [{"repos": ["releases-*"], "allow_countries": ["China"]}]},
        {"rules": [{"repos": ["releases-*"]}]},
        {"rules": {"repos": ["x"]}},
        {"rule": []},
        {},
        [],
    ],
)
def test_a_bad_rule_set_is_a_400_and_changes_nothing(issue_rules: Site, body: Any) -> None:
    before = issue_rules.rules().json()
    got = issue_rules.rules("PUT", body)
    assert got.status == 400 and got.error
    assert issue_rules.rules().json() == before
    assert issue_rules.get(RELEASE, CN).status == 403


@pytest.mark.parametrize(
    "rules",
    [
        [{"deny_cidrs": ["127.0.0.0/8"]}],  # the admin's own network, everywhere
        [{"allow_cidrs": ["198.51.100.0/24"]}],  # only another network, everywhere
        [{"repos": ["releases-*"], "allow_countries": ["US"]}, {"deny_cidrs": ["0.0.0.0/0", "::/0"]}],
    ],
)
def test_rules_that_would_lock_the_admin_out_are_a_409_and_change_nothing(issue_rules: Site, rules: Any) -> None:
    before = issue_rules.rules().json()
    got = issue_rules.rules("PUT", {"rules": rules})
    assert got.status == 409 and "lock you out" in got.error
    assert issue_rules.rules().json() == before
    assert issue_rules.get(RELEASE, US).status == 200
    scoped = issue_rules.rules("PUT", {"rules": [{"repos": ["releases-*"], **rules[-1]}]})
    assert scoped.status == 200, "the same rule for some repos only leaves the API reachable"


def test_only_an_admin_sees_or_changes_the_rules(issue_rules: Site) -> None:
    edge = issue_rules.edge
    made = call(edge.url + "/access/api/v1/tokens", "POST", body={"role": "deployer"}, token=edge.admin_token)
    deployer = made.json()["access_token"]
    open_all = {"rules": []}
    assert call(edge.url + RULES, "PUT", body=open_all).status == 401
    assert call(edge.url + RULES, "PUT", body=open_all, token=deployer).status == 403
    assert call(edge.url + RULES, "GET", token=deployer).status == 403
    assert call(edge.url + RULES, "DELETE", token=deployer).status == 403
    assert issue_rules.rules().json()["source"] == "settings"
    assert issue_rules.get(RELEASE, CN).status == 403


def test_a_refused_deploy_stores_nothing(issue_rules: Site) -> None:
    rules = {"rules": [{"repos": ["artifactory-edge-uploads"], "deny_cidrs": ["192.0.2.0/24"]}]}
    assert issue_rules.rules("PUT", rules).status == 200
    target = "artifactory-edge-uploads/tools/from-denied.sh"
    put = issue_rules.get(target, CN, method="PUT", body=b"echo hi\n", token=issue_rules.edge.admin_token)
    assert put.status == 403 and put.error == "Access from your network address is not allowed"
    assert issue_rules.get("api/storage/" + target, US).status == 404
    listing = issue_rules.get("api/storage/artifactory-edge-uploads/tools?list&deep=1", US).json()
    assert [f["uri"] for f in listing["files"]] == ["/setup.sh"]


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:  # a hang guard, not a speed check
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_the_geo_database_is_reloaded_when_its_file_changes(issue_rules: Site) -> None:
    assert issue_rules.get(RELEASE, CN).status == 403
    try:
        write_mmdb(issue_rules.geo, {**COUNTRIES, "192.0.2.0/24": {"country": {"iso_code": "CA"}}})
        wait_for(lambda: issue_rules.get(RELEASE, CN).status == 200, "the new database")
        issue_rules.geo.write_bytes(b"not a database")  # rewritten in place, corrupt: unknown, so denied
        wait_for(lambda: issue_rules.get(RELEASE, US).status == 403, "the corrupt database")
        assert issue_rules.get(RELEASE, US).error == "Access from your location is not allowed"
        assert issue_rules.rules().json()["geoip_database"]["loaded"] is False
    finally:
        write_mmdb(issue_rules.geo)
        wait_for(lambda: issue_rules.get(RELEASE, US).status == 200, "the original database")
    assert issue_rules.get(RELEASE, CN).status == 403


UNKNOWN_IN = {
    "missing": [US, CN],
    "corrupt": [US, CN],
    "ipv4-only": ["2001:db8:1::5"],  # DE in the full database; an IPv4-only one cannot say
    "complete": [NOT_IN_DB, NO_COUNTRY, "2001:db8:9::5"],  # not found; a record without a country
}


@pytest.mark.parametrize("database", list(UNKNOWN_IN))
@pytest.mark.parametrize("geo_unknown", ["deny", "allow"])
def test_where_the_country_is_unknown_the_configured_answer_applies(
    tmp_path: Path, database: str, geo_unknown: str
) -> None:
    geo = tmp_path / "GeoLite2-Country.mmdb"
    if database == "corrupt":
        geo.write_bytes(b"\x00" * 64 + b"\xab\xcd\xefMaxMind.com" + b"\xff" * 64)
    elif database != "missing":
        write_mmdb(geo, ip_version=4 if database == "ipv4-only" else 6)
    edge = start_edge(tmp_path / "edge", ISSUE_CONFIG.format(geo=geo, unknown=geo_unknown))
    try:
        put = call(f"{edge.artifactory_url}/{UPLOAD}", "PUT", body=UPLOAD_BYTES, token=edge.admin_token)
        assert put.status == 201
        rule = {"repos": ["artifactory-*"], "allow_countries": ["US", "CA"], "deny_cidrs": ["203.0.113.0/24"]}
        assert call(edge.url + RULES, "PUT", body={"rules": [rule]}, token=edge.admin_token).status == 200

        def get(client: str) -> Answer:
            return call(f"{edge.artifactory_url}/{UPLOAD}", headers={"X-Forwarded-For": client})

        for client in UNKNOWN_IN[database]:
            got = get(client)
            if geo_unknown == "deny":
                assert got.status == 403 and got.error == "Access from your location is not allowed", client
            else:
                assert (got.status, got.body) == (200, UPLOAD_BYTES), client
        if database in ("ipv4-only", "complete"):  # known countries are judged by the rule in both modes
            assert get(US).status == 200 and get(CN).status == 403
        if database == "complete":
            assert get(CA_REGISTERED).status == 200
        # IP rules do not depend on the database
        denied = get(DE_DENIED_NET)
        assert denied.status == 403 and denied.error == "Access from your network address is not allowed"
        loaded = call(edge.url + RULES, token=edge.admin_token).json()["geoip_database"]["loaded"]
        assert loaded is (database in ("ipv4-only", "complete"))
    finally:
        assert edge.stop() == 0, edge.log_tail()


def audit_of(site: Site, client: str) -> list[dict[str, Any]]:
    """The audit records of one client address, once the trail has written at least one."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        answer = call(f"{site.edge.artifactory_url}/api/audit?ip={client}", token=site.edge.admin_token)
        assert answer.status == 200, answer.body
        found[:] = answer.json()["records"]
        return bool(found)

    wait_for(written, f"the audit record of {client}")
    return found


def test_each_refusal_leaves_one_audit_record_naming_the_rule_client_and_country(issue_rules: Site) -> None:
    assert issue_rules.get(RELEASE, "192.0.2.77").status == 403
    (record,) = audit_of(issue_rules, "192.0.2.77")
    assert record["deniedBy"] == "geo-allow CN [releases-*]"
    assert (record["clientIp"], record["country"], record["status"]) == ("192.0.2.77", "CN", 403)
    assert (record["repo"], record["path"]) == ("releases-local", "app/1.4.0/app-1.4.0.tar.gz")

    answer = call(
        issue_rules.edge.url + "/artifactory/api/signed/url",
        "POST",
        body={"repo_path": "/" + RELEASE, "valid_for_secs": 600},
        token=issue_rules.edge.admin_token,
    )
    assert answer.status == 200, answer.body
    url = answer.body.decode()
    assert call(url, headers={"X-Forwarded-For": "198.51.100.77"}).body == RELEASE_BYTES
    (used,) = audit_of(issue_rules, "198.51.100.77")
    assert used["deniedBy"] is None and used["status"] == 200 and used["country"] == "US"
    assert used["signedUrl"]["kid"].startswith("ed25519-") and used["subject"] == "edge"
    tampered = call(url[:-2] + "xx", headers={"X-Forwarded-For": "198.51.100.78"})
    assert tampered.status == 403
    (refused,) = audit_of(issue_rules, "198.51.100.78")
    assert refused["deniedBy"].startswith("signed-url: ") and refused["signedUrl"] is None
