"""Signed URLs against a real ``edge serve``: every line of THREATS.md's "Signed URLs".

The edge trusts a partner issuer's Ed25519 public key and an HS256 secret from its
settings file; the tests hold the partner's private key and the secret, so they can
mint any token, well-formed or not, with code independent of the edge's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devstack.services import EdgeProcess
from edge.access.signed_urls import b64url_decode_canonical
from tests.access_http import Answer, call

UPLOADS = "artifactory-edge-uploads"
APP = f"{UPLOADS}/partner/app-1.4.0.tar.gz"
OTHER = f"{UPLOADS}/partner/other.bin"
SIGN = "/artifactory/api/signed/url"
URL_KEYS = "/artifactory/api/signed/keys"
MiB = 1024 * 1024
LEEWAY = 30
MAX_LIFETIME = 2 * 24 * 3600
PARTNER_KID = "partner-issuer"
HS_KID = "shared-hs"
HS_SECRET = "a shared secret of more than thirty-two characters"
PARTNER_NET = "198.51.100.0/24"
PARTNER_IP, OTHER_IP, DENIED_IP = "198.51.100.7", "192.0.2.5", "203.0.113.9"
INVALID = "Invalid signed URL"
EXPIRED = "Signed URL has expired"
PARTNER_KEY = Ed25519PrivateKey.generate()
APP_BYTES = os.urandom(3 * MiB + 17)
OTHER_BYTES = b"another file\n"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def partner_pem() -> str:
    public = PARTNER_KEY.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def config_text(extra: str = "") -> str:
    pem = partner_pem().strip()
    return f"""\
uploads_anonymous_read = false
[access]
trusted_proxies = ["127.0.0.1/32"]
[[access.rules]]
repos = ["{UPLOADS}"]
deny_cidrs = ["203.0.113.0/24"]
[access.signed_urls]
leeway = {LEEWAY}
max_lifetime = {MAX_LIFETIME}
{extra}
[[access.signed_urls.keys]]
kid = "{PARTNER_KID}"
public_key = \"\"\"{pem}\"\"\"
[[access.signed_urls.keys]]
kid = "{HS_KID}"
secret = "{HS_SECRET}"
"""


def mint(
    claims: dict[str, Any] | bytes,
    *,
    kid: str | None = PARTNER_KID,
    alg: str = "EdDSA",
    key: Ed25519PrivateKey | bytes = PARTNER_KEY,
) -> str:
    """A compact JWS made here, not by the edge: any header, any claims, raw bytes allowed."""
    header = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid is not None else {})
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}".encode()
    if isinstance(key, bytes):
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    else:
        signature = key.sign(signing_input)
    return f"{signing_input.decode()}.{b64(signature)}"


def claims_for(target: str = APP, *, lifetime: int = 3600, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": target, "iss": "partner", "iat": now, "exp": now + lifetime} | changes


def parts(url: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    token = url.split("?sig=", 1)[1]
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode_canonical(header)), json.loads(b64url_decode_canonical(payload)), signature


class Signer:
    """The module's edge: its files, and how the tests talk to it."""

    def __init__(self, edge: EdgeProcess) -> None:
        self.edge = edge

    def issue(self, body: Any, token: str | None = "admin") -> Answer:
        return call(self.edge.url + SIGN, "POST", body=body, token=self.edge.admin_token if token == "admin" else token)

    def url(self, target: str = APP, **body: Any) -> str:
        fields = {"repo_path": "/" + target, "valid_for_secs": 3600} | body
        answer = self.issue({k: v for k, v in fields.items() if v is not None})  # None: left out
        assert answer.status == 200, answer.body
        assert answer.headers["Content-Type"].startswith("text/plain")
        return answer.body.decode()

    def with_sig(self, token: str, target: str = APP) -> str:
        return f"{self.edge.artifactory_url}/{target}?sig={token}"

    def get(self, url: str, client: str | None = None, **kw: Any) -> Answer:
        headers = dict(kw.pop("headers", {}))
        if client is not None:
            headers["X-Forwarded-For"] = client
        return call(url, headers=headers, **kw)

    def refused(self, url: str, message: str = INVALID, client: str | None = None, **kw: Any) -> None:
        got = self.get(url, client, **kw)
        assert got.status == 403, (url, got.status, got.body[:200])
        assert got.error == message

    def content(self, target: str) -> bytes:
        got = call(f"{self.edge.artifactory_url}/{target}", token=self.edge.admin_token)
        assert got.status == 200
        return got.body


def upload(edge: EdgeProcess, target: str, data: bytes) -> None:
    put = call(f"{edge.artifactory_url}/{target}", "PUT", body=data, token=edge.admin_token)
    assert put.status == 201, put.body


def start_edge(base: Path, text: str) -> EdgeProcess:
    base.mkdir(parents=True, exist_ok=True)
    (base / "edge.toml").write_text(text)
    edge = EdgeProcess(base, config=base / "edge.toml").start()
    upload(edge, APP, APP_BYTES)
    upload(edge, OTHER, OTHER_BYTES)
    return edge


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    edge = start_edge(tmp_path_factory.mktemp("signed-urls") / "edge", config_text())
    try:
        yield Signer(edge)
    finally:
        code = edge.stop()
        print(f"edge log, last lines:\n{edge.log_tail()}")
    assert code == 0, edge.log_tail()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=120, env=env)


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    edge = Path(sys.executable).parent / "edge"
    return subprocess.run([str(edge), *args], capture_output=True, text=True, timeout=120)


# -- issuing and using -------------------------------------------------------------


def test_an_admin_issues_a_url_that_plain_curl_downloads_and_resumes(signer: Signer, tmp_path: Path) -> None:
    url = signer.url(APP, valid_for_secs=86400)
    assert url.startswith(f"{signer.edge.artifactory_url}/{APP}?sig=")
    header, claims, _ = parts(url)
    assert header["alg"] == "EdDSA" and header["kid"].startswith("ed25519-")
    assert claims["sub"] == APP and claims["exp"] - claims["iat"] == 86400 and claims["iss"] == "edge"
    assert "cidr" not in claims

    anonymous = call(f"{signer.edge.artifactory_url}/{APP}")
    assert anonymous.status == 401, "without the sig the file needs a token"

    whole = tmp_path / "whole"
    assert curl("-f", "-o", str(whole), url).returncode == 0
    assert whole.read_bytes() == APP_BYTES
    ranged = curl("-f", "-r", "100-199", url)
    assert ranged.returncode == 0 and ranged.stdout == APP_BYTES[100:200]
    partial = tmp_path / "partial"
    partial.write_bytes(APP_BYTES[: MiB + 3])
    resumed = curl("-f", "-C", "-", "-o", str(partial), url)
    assert resumed.returncode == 0, resumed.stderr
    assert partial.read_bytes() == APP_BYTES
    head = signer.get(url, method="HEAD")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(APP_BYTES)


BAD_CREDENTIALS = {
    "bearer": {"Authorization": "Bearer edt_not-a-token-of-this-edge"},
    "basic": {"Authorization": "Basic " + base64.b64encode(b"nobody:wrong password").decode()},
    "api key": {"X-JFrog-Art-Api": "edt_not-a-token-of-this-edge"},
}


@pytest.mark.parametrize("credential", BAD_CREDENTIALS)
def test_a_bad_credential_is_a_401_also_beside_a_valid_signed_url(signer: Signer, credential: str) -> None:
    url = signer.url(APP)
    for target in (url, f"{signer.edge.artifactory_url}/{APP}"):
        got = signer.get(target, headers=BAD_CREDENTIALS[credential])
        assert got.status == 401 and got.error == "Bad credentials", (target, got.status)
        assert "WWW-Authenticate" in got.headers
    assert signer.get(url).status == 200  # the URL itself still works


def test_a_good_credential_beside_a_valid_signed_url_downloads_and_is_the_audited_caller(signer: Signer) -> None:
    issued = call(
        signer.edge.url + "/access/api/v1/tokens",
        "POST",
        body={"username": "partner-bot", "role": "reader"},
        token=signer.edge.admin_token,
    ).json()
    url = signer.url(OTHER)
    got = signer.get(url, headers={"Authorization": f"Bearer {issued['access_token']}"})
    assert (got.status, got.body) == (200, OTHER_BYTES)
    _, claims, _ = parts(url)
    record = audited(signer, OTHER, issued["token_id"])
    assert record["subject"] == "partner-bot" and record["status"] == 200
    assert record["signedUrl"]["iat"] == claims["iat"]


def audited(signer: Signer, target: str, token_id: str) -> dict[str, Any]:
    """The download of ``target`` by ``token_id`` in the audit trail, once written (it is written
    every half second)."""
    repo, path = target.split("/", 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = call(
            f"{signer.edge.url}/artifactory/api/audit?repo={repo}&path={quote(path)}&action=download",
            token=signer.edge.admin_token,
        ).json()
        found = [r for r in answer["records"] if r["tokenId"] == token_id]
        if found:
            return dict(found[0])
        time.sleep(0.1)
    raise AssertionError(f"no audit record of {target} by token {token_id}")


def test_jfrog_s_expiry_in_epoch_milliseconds_is_understood(signer: Signer) -> None:
    expiry = int(time.time() * 1000) + 600_000
    url = signer.url(APP, valid_for_secs=None, expiry=expiry)
    _, claims, _ = parts(url)
    assert abs(claims["exp"] - expiry // 1000) <= 1
    assert signer.get(url).status == 200


def test_the_cli_signs_a_url_bound_to_the_partner_s_network(signer: Signer) -> None:
    done = edge_cli(
        "sign-url",
        APP,
        "--valid-for",
        "24h",
        "--client-cidr",
        PARTNER_NET,
        "--url",
        signer.edge.url,
        "--token",
        signer.edge.admin_token,
    )
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    _, claims, _ = parts(url)
    assert claims["cidr"] == PARTNER_NET and claims["exp"] - claims["iat"] == 24 * 3600
    got = signer.get(url, PARTNER_IP)
    assert (got.status, got.body) == (200, APP_BYTES)
    signer.refused(url, client=OTHER_IP)
    signer.refused(url)  # the proxy itself, 127.0.0.1, is not in the partner's network
    signer.refused(url, client="2001:db8::7")  # an IPv6 client against an IPv4 binding
    signer.refused(url, client=PARTNER_IP, source="127.0.0.2")  # spoofed X-Forwarded-For from an untrusted peer
    signer.refused(url, client=f"{PARTNER_IP}, {OTHER_IP}")  # the partner's address on the wrong side


def test_ip_rules_still_apply_to_signed_requests(signer: Signer) -> None:
    url = signer.url(APP)
    assert signer.get(url, PARTNER_IP).status == 200
    signer.refused(url, "Access from your network address is not allowed", client=DENIED_IP)


def test_a_partner_s_url_made_with_pyjwt_works(signer: Signer) -> None:
    token = jwt.encode(claims_for(), PARTNER_KEY, algorithm="EdDSA", headers={"kid": PARTNER_KID})
    got = signer.get(signer.with_sig(token))
    assert (got.status, got.body) == (200, APP_BYTES)


def test_an_hs256_url_from_the_shared_secret_works(signer: Signer) -> None:
    token = mint(claims_for(), kid=HS_KID, alg="HS256", key=HS_SECRET.encode())
    assert signer.get(signer.with_sig(token)).status == 200


# -- what a URL does not open --------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        OTHER,
        f"{UPLOADS}/partner/APP-1.4.0.tar.gz",
        f"{UPLOADS}/partner/app-1.4.0.tar.gz.sha256",
        f"{UPLOADS}/partner/../partner/app-1.4.0.tar.gz",
        f"{UPLOADS}/partner/..%2fpartner/app-1.4.0.tar.gz",
        f"{UPLOADS}/partner/%2e%2e/partner/app-1.4.0.tar.gz",
        f"{UPLOADS}/partner%5capp-1.4.0.tar.gz",
        f"{UPLOADS}/partner/app-1.4.0.tar.gz%00",
        f"{UPLOADS}/partner/%c0%ae%c0%ae/app-1.4.0.tar.gz",
        f"{UPLOADS}/partner",
        f"{UPLOADS}/",
        "releases-local/partner/app-1.4.0.tar.gz",
    ],
)
def test_a_url_opens_its_own_path_and_no_other(signer: Signer, target: str) -> None:
    token = signer.url(APP).split("?sig=")[1]
    got = signer.get(signer.with_sig(token, target))
    assert got.status in (403, 404), got.status
    assert got.error in (INVALID, "Unable to find item")
    assert got.body != APP_BYTES


@pytest.mark.parametrize(
    "path", ["api/storage/" + APP, "api/system/ping", "api/repositories", "api/signed/keys", "api/storage/" + UPLOADS]
)
def test_a_sig_on_anything_but_an_artifact_download_is_a_403(signer: Signer, path: str) -> None:
    token = signer.url(APP).split("?sig=")[1]
    signer.refused(
        f"{signer.edge.artifactory_url}/{path}?sig={token}", "Signed URLs are good for artifact downloads only"
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH"])
def test_a_url_is_good_for_get_and_head_only_and_refusing_changes_nothing(signer: Signer, method: str) -> None:
    url = signer.url(APP)
    got = signer.get(url, method=method, body=b"overwritten", token=signer.edge.admin_token)
    assert got.status == 403 and got.error == "Signed URLs are good for GET and HEAD only"
    assert signer.content(APP) == APP_BYTES


# -- tampering -----------------------------------------------------------------------


def retoken(url: str, *, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
    """The URL's token with another header or claims, keeping its signature."""
    token = url.split("?sig=", 1)[1]
    h, p, s = token.split(".")
    if header is not None:
        h = b64(json.dumps(header).encode())
    if claims is not None:
        p = b64(json.dumps(claims).encode())
    return f"{h}.{p}.{s}"


@pytest.mark.parametrize(
    "change",
    [
        {"exp": 10**10},  # expiry extended
        {"cidr": "0.0.0.0/0"},  # binding widened
        {"cidr": "198.51.0.0/16"},
        {"cidr": None},  # binding removed
        {"sub": OTHER},  # path changed
        {"iss": "someone else"},
        {"iat": 0},
    ],
)
def test_a_url_with_tampered_claims_is_refused(signer: Signer, change: dict[str, Any]) -> None:
    url = signer.url(APP, client_cidr=PARTNER_NET)
    assert signer.get(url, PARTNER_IP).status == 200
    _, claims, _ = parts(url)
    claims.update(change)
    claims = {k: v for k, v in claims.items() if v is not None}
    target = claims["sub"] if change.get("sub") else APP
    signer.refused(signer.with_sig(retoken(url, claims=claims), target), client=PARTNER_IP)


def test_a_switched_unknown_or_missing_kid_is_refused(signer: Signer) -> None:
    url = signer.url(APP)
    header, _, _ = parts(url)
    own_next = call(signer.edge.url + URL_KEYS, token=signer.edge.admin_token).json()["keys"]
    for kid in {PARTNER_KID, HS_KID, "nope", "", *(k["kid"] for k in own_next if k["kid"] != header["kid"])}:
        signer.refused(signer.with_sig(retoken(url, header=header | {"kid": kid})))
    signer.refused(signer.with_sig(retoken(url, header={k: v for k, v in header.items() if k != "kid"})))
    signer.refused(signer.with_sig(retoken(url, header=header | {"kid": 7})))
    signer.refused(signer.with_sig(retoken(url, header=header | {"jku": "http://127.0.0.1/keys"})))


def test_the_key_decides_the_algorithm_never_the_token(signer: Signer) -> None:
    hs_with_public_key = mint(claims_for(), kid=PARTNER_KID, alg="HS256", key=partner_pem().encode())
    signer.refused(signer.with_sig(hs_with_public_key))
    ed_under_the_secret_s_kid = mint(claims_for(), kid=HS_KID, alg="EdDSA")
    signer.refused(signer.with_sig(ed_under_the_secret_s_kid))
    unsigned = (
        f"{b64(json.dumps({'alg': 'none', 'kid': PARTNER_KID}).encode())}.{b64(json.dumps(claims_for()).encode())}."
    )
    signer.refused(signer.with_sig(unsigned))
    assert signer.get(signer.with_sig(mint(claims_for()))).status == 200  # the same claims, properly signed


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def non_canonical(segment: str) -> str:
    """The same bytes spelt otherwise: an Ed25519 signature leaves the last character's low bits unused."""
    sibling = segment[:-1] + B64URL[B64URL.index(segment[-1]) ^ 1]
    same = base64.urlsafe_b64decode(sibling + "==") == base64.urlsafe_b64decode(segment + "==")
    assert same, "the test needs a spelling that decodes to the same bytes"
    return sibling


def mangled(token: str) -> list[str]:
    head, payload, signature = token.split(".")
    return [
        f"{head}.{payload}.{signature[:-1]}",  # truncated
        f"{head}.{payload}.{signature[:-4]}",
        f"{head}.{payload}.{signature}=",  # padded
        f"{head}.{payload}.{signature}==",
        f"{head}.{payload}.{signature[:-1]}+",  # wrong alphabet
        f"{head}.{payload}.{signature[:-1]}/",
        f"{head}.{payload}.{signature[:10]}*{signature[11:]}",
        f"{head}.{payload}.{non_canonical(signature)}",
        f"{head}.{payload}.",  # empty
        f"{head}.{payload}",
        "",
        f"{token}.{signature}",
        f"%20{token}",
        f"{token}%20",
        f"{head}.{payload}.{signature[::-1]}",
        f"{head}=.{payload}.{signature}",
        token + "A" * 5000,
    ]


def test_truncated_padded_or_misspelt_signatures_are_refused(signer: Signer) -> None:
    token = signer.url(APP).split("?sig=")[1]
    assert signer.get(signer.with_sig(token)).status == 200
    for bad in mangled(token):
        signer.refused(signer.with_sig(bad))
    signer.refused(signer.with_sig(token) + "&sig=" + token)  # two sigs
    signer.refused(f"{signer.edge.artifactory_url}/{APP}?sig")


@pytest.mark.parametrize(
    "exp",
    ["{e}e0", "{e}E0", "{e}.0", '"{e}"', '"+{e}"', '" {e}"', '"{x}"', "-{e}", str(2**64), "true", "null", "[{e}]",
     "NaN", "Infinity"],
)  # fmt: skip
def test_malformed_numbers_in_signed_claims_are_refused(signer: Signer, exp: str) -> None:
    now = int(time.time())
    e = now + 600  # a fine expiry, only spelt wrongly
    raw = f'{{"sub":"{APP}","iss":"partner","iat":{now},"exp":{exp.format(e=e, x=hex(e))}}}'.encode()
    signer.refused(signer.with_sig(mint(raw)))
    good = f'{{"sub":"{APP}","iss":"partner","iat":{now},"exp":{e}}}'.encode()
    assert signer.get(signer.with_sig(mint(good))).status == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sub":"%s","iss":"p","iat":%d,"iat":%d,"exp":%d}',  # duplicate claim
        b'{"sub":"%s","iss":"p","iat":%d,"exp":%d,"extra":%d}',  # unknown claim
        b'["%s",%d,%d,%d]',
    ],
)
def test_claims_that_are_not_one_plain_object_are_refused(signer: Signer, raw: bytes) -> None:
    now = int(time.time())
    signer.refused(signer.with_sig(mint(raw % (APP.encode(), now, now, now + 60))))


# -- time --------------------------------------------------------------------------


def test_expiry_is_forgiven_within_the_leeway_and_not_beyond(signer: Signer) -> None:
    now = int(time.time())
    inside = mint(claims_for(iat=now - 100, exp=now - LEEWAY + 20))
    assert signer.get(signer.with_sig(inside)).status == 200
    beyond = mint(claims_for(iat=now - 200, exp=now - LEEWAY - 60))
    signer.refused(signer.with_sig(beyond), EXPIRED)
    early = mint(claims_for(iat=now + LEEWAY - 20, exp=now + 600))  # the issuer's clock is a little ahead
    assert signer.get(signer.with_sig(early)).status == 200
    future = mint(claims_for(iat=now + LEEWAY + 60, exp=now + 600))
    signer.refused(signer.with_sig(future))


def test_a_lifetime_beyond_the_maximum_is_refused_at_creation_and_on_use(signer: Signer) -> None:
    too_long = signer.issue({"repo_path": "/" + APP, "valid_for_secs": MAX_LIFETIME + 1})
    assert too_long.status == 400 and str(MAX_LIFETIME) in too_long.error
    far = signer.issue({"repo_path": "/" + APP, "expiry": (int(time.time()) + MAX_LIFETIME + 3600) * 1000})
    assert far.status == 400
    cli = edge_cli("sign-url", APP, "--valid-for", "3d", "--url", signer.edge.url, "--token", signer.edge.admin_token)
    assert cli.returncode != 0 and str(MAX_LIFETIME) in cli.stderr
    assert signer.url(APP, valid_for_secs=MAX_LIFETIME)
    now = int(time.time())
    assert signer.get(signer.with_sig(mint(claims_for(iat=now, exp=now + MAX_LIFETIME)))).status == 200
    signer.refused(signer.with_sig(mint(claims_for(iat=now, exp=now + MAX_LIFETIME + 1))))


def test_a_download_started_before_expiry_completes_and_a_range_after_it_fails(signer: Signer) -> None:
    import http.client

    now = int(time.time())
    exp = now - LEEWAY + 4  # still accepted for about four seconds
    url = signer.with_sig(mint(claims_for(iat=now - 60, exp=exp)))
    conn = http.client.HTTPConnection("127.0.0.1", signer.edge.port, timeout=60)
    try:
        conn.request("GET", url.split(str(signer.edge.port), 1)[1])
        response = conn.getresponse()
        assert response.status == 200
        first = response.read(64 * 1024)
        while time.time() <= exp + LEEWAY + 1:
            time.sleep(0.2)
        rest = response.read()
    finally:
        conn.close()
    assert first + rest == APP_BYTES
    signer.refused(url, EXPIRED, headers={"Range": f"bytes={len(first)}-"})


# -- the issuing API ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"repo_path": "/" + APP, "valid_for_secs": 1e9},
        {"repo_path": "/" + APP, "valid_for_secs": 3600.0},
        {"repo_path": "/" + APP, "valid_for_secs": "+1"},
        {"repo_path": "/" + APP, "valid_for_secs": " 60"},
        {"repo_path": "/" + APP, "valid_for_secs": "0x10"},
        {"repo_path": "/" + APP, "valid_for_secs": "3600"},
        {"repo_path": "/" + APP, "valid_for_secs": -1},
        {"repo_path": "/" + APP, "valid_for_secs": 0},
        {"repo_path": "/" + APP, "valid_for_secs": 2**70},
        {"repo_path": "/" + APP, "valid_for_secs": True},
        {"repo_path": "/" + APP, "expiry": 1000},
        {"repo_path": "/" + APP, "valid_for_secs": 60, "expiry": int(time.time() * 1000) + 60_000},
        {"repo_path": "/" + APP, "client_cidr": "198.51.100.7/24"},
        {"repo_path": "/" + APP, "client_cidr": "everyone"},
        {"repo_path": "/" + APP, "valid_for_seconds": 60},
        {"repo_path": f"/{UPLOADS}/partner/../partner/app-1.4.0.tar.gz"},
        {"repo_path": f"/{UPLOADS}"},
        {"repo_path": 7},
        {},
        [APP],
    ],
)
def test_a_malformed_signing_request_is_a_400(signer: Signer, body: Any) -> None:
    got = signer.issue(body)
    assert got.status == 400 and got.error


def test_only_an_admin_signs_and_only_files_that_exist(signer: Signer) -> None:
    made = call(
        signer.edge.url + "/access/api/v1/tokens", "POST", body={"role": "reader"}, token=signer.edge.admin_token
    )
    reader = made.json()["access_token"]
    body = {"repo_path": "/" + APP, "valid_for_secs": 60}
    assert signer.issue(body, token=None).status == 401
    assert signer.issue(body, token=reader).status == 403
    missing = signer.issue({"repo_path": f"/{UPLOADS}/partner/missing.bin"})
    assert missing.status == 404 and missing.error == "Unable to find item"


# -- keys --------------------------------------------------------------------------


def keys_of(edge: EdgeProcess) -> dict[str, Any]:
    answer = call(edge.url + URL_KEYS, token=edge.admin_token)
    assert answer.status == 200, answer.body
    return dict(answer.json())


def test_rotation_keeps_old_urls_until_their_key_is_removed(signer: Signer) -> None:
    edge = signer.edge
    before = keys_of(edge)
    old_url = signer.url(APP)
    rotated = edge_cli("url-keys", "rotate", "--url", edge.url, "--token", edge.admin_token)
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.strip()
    assert new_kid != before["signing_kid"] and keys_of(edge)["signing_kid"] == new_kid
    new_url = signer.url(APP)
    assert parts(new_url)[0]["kid"] == new_kid and parts(old_url)[0]["kid"] == before["signing_kid"]
    assert signer.get(old_url).status == 200 and signer.get(new_url).status == 200

    key_dir = edge.data_dir / "url-signing"
    assert key_dir.stat().st_mode & 0o777 == 0o700
    assert (key_dir / f"{new_kid}.pem").stat().st_mode & 0o777 == 0o600

    signing = call(f"{edge.url}{URL_KEYS}/{new_kid}", "DELETE", token=edge.admin_token)
    assert signing.status == 409 and "rotate" in signing.error
    from_settings = call(f"{edge.url}{URL_KEYS}/{PARTNER_KID}", "DELETE", token=edge.admin_token)
    assert from_settings.status == 409
    removed = edge_cli("url-keys", "remove", before["signing_kid"], "--url", edge.url, "--token", edge.admin_token)
    assert removed.returncode == 0, removed.stderr
    signer.refused(old_url)
    assert signer.get(new_url).status == 200
    assert not (key_dir / f"{before['signing_kid']}.pem").exists()
    assert call(f"{edge.url}{URL_KEYS}/{before['signing_kid']}", "DELETE", token=edge.admin_token).status == 404
    sources = {k["kid"]: k["source"] for k in keys_of(edge)["keys"]}
    assert sources == {new_kid: "own", PARTNER_KID: "settings", HS_KID: "settings"}
    assert all(k["public_key"] is None for k in keys_of(edge)["keys"] if k["kid"] == HS_KID)


def test_one_issuer_s_urls_work_on_every_edge_that_trusts_its_public_key(signer: Signer, tmp_path: Path) -> None:
    a = signer.edge
    b = start_edge(tmp_path / "b", config_text('algorithm = "HS256"'))
    try:
        a_url = signer.url(APP)
        on_b = a_url.replace(a.url, b.url)
        signer.refused(on_b)  # b does not know a's key yet

        exported = edge_cli("url-keys", "export", "--url", a.url, "--token", a.admin_token)
        assert exported.returncode == 0, exported.stderr
        kid = exported.stderr.split("kid ", 1)[1].split()[0]
        pem = tmp_path / "a.pem"
        pem.write_text(exported.stdout)
        trusted = edge_cli("url-keys", "trust", str(pem), "--kid", kid, "--url", b.url, "--token", b.admin_token)
        assert trusted.returncode == 0, trusted.stderr
        got = call(on_b)
        assert (got.status, got.body) == (200, APP_BYTES)
        again = call(b.url + URL_KEYS, "POST", body={"kid": kid, "public_key": exported.stdout}, token=b.admin_token)
        assert again.status == 200
        other = call(b.url + URL_KEYS, "POST", body={"kid": kid, "public_key": partner_pem()}, token=b.admin_token)
        assert other.status == 409

        # b signs with the shared HS256 secret, which a holds too
        b_answer = call(b.url + SIGN, "POST", body={"repo_path": "/" + OTHER}, token=b.admin_token)
        assert b_answer.status == 200, b_answer.body
        b_url = b_answer.body.decode()
        assert parts(b_url)[0] == {"alg": "HS256", "kid": HS_KID, "typ": "JWT"}
        assert call(b_url.replace(b.url, a.url)).body == OTHER_BYTES

        assert call(f"{b.url}{URL_KEYS}/{kid}", "DELETE", token=b.admin_token).status == 204
        refused = call(on_b)
        assert refused.status == 403 and refused.error == INVALID
        assert call(a_url).status == 200
    finally:
        assert b.stop() == 0, b.log_tail()


@pytest.mark.parametrize(
    "body",
    [
        {"kid": "k", "public_key": "not a key"},
        {"kid": "bad kid", "public_key": "-"},
        {"kid": "k"},
        {"kid": "k", "public_key": "-", "secret": "x" * 40},
        {"kid": "rotate", "public_key": partner_pem()},  # names the rotation call, never a key
    ],
)
def test_a_bad_key_to_trust_is_a_400(signer: Signer, body: dict[str, Any]) -> None:
    if body.get("public_key") == "-":
        body["public_key"] = partner_pem()
    got = call(signer.edge.url + URL_KEYS, "POST", body=body, token=signer.edge.admin_token)
    assert got.status == 400 and got.error
    assert body.get("kid") not in {k["kid"] for k in keys_of(signer.edge)["keys"]}


def test_rotate_is_the_rotation_call_and_no_key_so_delete_there_is_a_405(signer: Signer) -> None:
    got = call(signer.edge.url + URL_KEYS + "/rotate", "DELETE", token=signer.edge.admin_token)
    assert got.status == 405 and got.headers["Allow"] == "POST" and got.error


def test_the_url_path_is_percent_encoded_and_matched_decoded(signer: Signer) -> None:
    target = f"{UPLOADS}/partner/with space/naïve #1.txt"
    upload(signer.edge, quote(target), b"odd name\n")
    url = signer.url(target)
    assert "with%20space/na%C3%AFve%20%231.txt?sig=" in url
    assert call(url).body == b"odd name\n"
