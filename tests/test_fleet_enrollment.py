"""Enrollment tokens, enrollment, device revocation and the signing keys devices fetch, over REST."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from distribution.keys import signer_key
from fleet import enrollment
from fleet.enrollment_tokens import parse_duration
from repository.errors import BadRequest
from tests.conftest import admin
from tests.fleet_setup import (
    check_in,
    create_token,
    enroll,
    enrolled,
    fleet_fixture,  # noqa: F401  (fixture 'fleet')
    refusal,
    role_headers,
    stored,
)
from wire.fleet import FLEET_API, KEYS, MAX_TAGS, Enrollment, SigningKeys, decode_keys_document, device_headers
from wire.signatures import TrustStore

TOKENS = f"{FLEET_API}/enrollment-tokens"


async def test_a_token_is_shown_once_and_listed_without_its_secret(fleet: Any) -> None:
    token = await create_token(fleet, "pos-emea", tags={"country": "PT"}, expires_in=3600)
    assert token["token"].startswith("fet_") and token["group"] == "pos-emea" and token["state"] == "active"
    assert token["tags"] == {"country": "PT"}
    listed = await (await fleet.get(TOKENS, headers=admin())).json()
    assert [t["id"] for t in listed] == [token["id"]]
    assert "token" not in listed[0] and token["token"] not in str(listed)
    rows = (await stored(fleet))["fleet_enrollment_tokens"]
    assert token["token"] not in str(rows) and hashlib.sha256(token["token"].encode()).hexdigest() in str(rows)


async def test_one_token_enrolls_many_devices_until_it_is_revoked(fleet: Any) -> None:
    token = await create_token(fleet)
    for name in ("till-1", "till-2"):
        assert (await enroll(fleet, token["token"], name)).status == 201
    assert (await fleet.delete(f"{TOKENS}/{token['id']}", headers=admin())).status == 204
    assert (await fleet.delete(f"{TOKENS}/{token['id']}", headers=admin())).status == 204  # again: fine
    before = await stored(fleet)
    status, message = await refusal(await enroll(fleet, token["token"], "till-3"))
    assert (status, "revoked" in message) == (401, True)
    assert await stored(fleet) == before
    listed = await (await fleet.get(TOKENS, headers=admin())).json()
    assert [(t["state"], t["devices_enrolled"]) for t in listed] == [("revoked", 2)]


async def test_an_expired_or_unknown_token_enrolls_nothing(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token = await create_token(fleet, expires_in=60)
    before = await stored(fleet)
    status, message = await refusal(await enroll(fleet, "fet_not-a-token", "till-1"))
    assert (status, message) == (401, "Unknown enrollment token")
    later = enrollment.now_ms() + 61_000
    monkeypatch.setattr(enrollment, "now_ms", lambda: later)
    status, message = await refusal(await enroll(fleet, token["token"], "till-1"))
    assert status == 401 and "expired" in message
    assert await stored(fleet) == before
    listed = await (await fleet.get(TOKENS, headers=admin())).json()
    assert listed[0]["state"] == "active"  # by the service's real clock, a minute is not over yet


async def test_enrollment_answers_a_credential_and_the_service_keys(fleet: Any) -> None:
    token = await create_token(fleet, "pos-emea", tags={"country": "PT", "site": "lisbon-1"})
    resp = await enroll(fleet, token["token"], "till-0042", tags={"site": "elsewhere", "lane": "3"}, agent_version="1")
    assert resp.status == 201
    answer = Enrollment.from_json(await resp.json())
    assert (answer.name, answer.group, answer.poll_interval) == ("till-0042", "pos-emea", 30)
    assert answer.credential.startswith("fdc_") and len(answer.credential) >= 4 + 43  # 256 bits
    infos = fleet.app[signer_key].keys()
    assert [k.fingerprint for k in answer.signing_keys] == [k.fingerprint for k in infos]
    device = await (await fleet.get(f"{FLEET_API}/devices/till-0042", headers=admin())).json()
    assert device["tags"] == {"country": "PT", "lane": "3", "site": "lisbon-1"}  # the token's tags win
    assert answer.credential not in str(await stored(fleet))


async def test_a_name_enrolled_is_409_until_the_device_is_revoked(fleet: Any) -> None:
    token = await create_token(fleet)
    first = Enrollment.from_json(await (await enroll(fleet, token["token"], "till-1")).json())
    before = await stored(fleet)
    status, message = await refusal(await enroll(fleet, token["token"], "till-1"))
    assert status == 409 and "revoke" in message
    assert await stored(fleet) == before
    assert (await fleet.post(f"{FLEET_API}/devices/till-1/revoke", headers=admin())).status == 200
    second = await enroll(fleet, token["token"], "till-1")
    assert second.status == 201
    again = Enrollment.from_json(await second.json())
    assert again.device_id != first.device_id
    assert (await check_in(fleet, again.credential)).status == 200
    assert (await check_in(fleet, first.credential)).status == 401


async def test_a_revoked_device_is_refused_at_its_next_call(fleet: Any) -> None:
    credential = await enrolled(fleet, "till-1")
    assert (await check_in(fleet, credential)).status == 200
    revoked = await fleet.post(f"{FLEET_API}/devices/till-1/revoke", headers=admin())
    assert (await revoked.json())["revoked"] is not None
    status, message = await refusal(await check_in(fleet, credential))
    assert status == 401 and "revoked" in message
    status, _ = await refusal(await fleet.get(KEYS, headers=device_headers(credential)))
    assert status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in": "24h"}, "group"),
        ({"group": "pos emea", "expires_in": "24h"}, "group"),
        ({"group": "pos", "expires_in": "24x"}, "expires_in"),
        ({"group": "pos", "expires_in": 0}, "expires_in"),
        ({"group": "pos", "expires_in": "366d"}, "expires_in"),
        ({"group": "pos"}, "expires_in"),
        ({"group": "pos", "expires_in": 60, "tags": {"a b": "c"}}, "tags"),
        ({"group": "pos", "expires_in": 60, "scope": "all"}, "scope"),
    ],
)
async def test_a_bad_token_request_is_a_400_naming_the_field(fleet: Any, body: dict[str, Any], field: str) -> None:
    before = await stored(fleet)
    status, message = await refusal(await fleet.post(TOKENS, json=body, headers=admin()))
    assert status == 400 and field in message
    assert await stored(fleet) == before


@pytest.mark.parametrize(
    ("text", "parsed"), [(1, 1), ("90s", 90), ("30m", 1800), ("24h", 86400), ("365d", 365 * 86400), ("7", 7)]
)
def test_token_lifetimes_are_seconds_or_durations_up_to_a_year(text: object, parsed: int) -> None:
    """How a lifetime given as text is read (a parser's answer: nothing is timed)."""
    assert parse_duration(text) == parsed


@pytest.mark.parametrize("value", [0, -1, 365 * 86400 + 1, "0h", "1.5h", "h", "", True, 1.0, None])
def test_other_token_lifetimes_are_refused(value: object) -> None:
    with pytest.raises(BadRequest):
        parse_duration(value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "x"}, "name"),
        ({"token": "x", "name": "../etc"}, "device name"),
        ({"token": "x", "name": "a", "tags": {f"t{i}": "v" for i in range(MAX_TAGS + 1)}}, "tags"),
        ({"token": "x", "name": "a", "extra": 1}, "extra"),
    ],
)
async def test_a_bad_enrollment_is_a_400_naming_the_field(fleet: Any, body: dict[str, Any], field: str) -> None:
    before = await stored(fleet)
    status, message = await refusal(await fleet.post(f"{FLEET_API}/device/enroll", json=body))
    assert status == 400 and field in message
    assert await stored(fleet) == before


async def test_device_tags_with_the_tokens_may_not_pass_the_limit(fleet: Any) -> None:
    token = await create_token(fleet, tags={f"t{i}": "v" for i in range(MAX_TAGS)})
    mine = {"t0": "mine"}  # the same key: still MAX_TAGS in all
    assert (await enroll(fleet, token["token"], "till-1", tags=mine)).status == 201
    before = await stored(fleet)
    status, message = await refusal(await enroll(fleet, token["token"], "till-2", tags={"extra": "1"}))
    assert status == 400 and "tags" in message
    assert await stored(fleet) == before


async def test_a_reader_may_list_but_not_create_or_revoke_tokens_or_devices(fleet: Any) -> None:
    token = await create_token(fleet)
    await enroll(fleet, token["token"], "till-1")
    reader = await role_headers(fleet, "reader")
    before = await stored(fleet)
    for method, path, body in [
        ("POST", TOKENS, {"group": "pos", "expires_in": 60}),
        ("DELETE", f"{TOKENS}/{token['id']}", None),
        ("POST", f"{FLEET_API}/devices/till-1/revoke", None),
        ("PUT", f"{FLEET_API}/devices/till-1", {"poll_interval": 60}),
    ]:
        status, _ = await refusal(await fleet.request(method, path, json=body, headers=reader))
        assert status == 403, (method, path)
    assert await stored(fleet) == before
    assert (await fleet.get(TOKENS, headers=reader)).status == 200
    assert (await fleet.get(TOKENS)).status == 401
    assert (await fleet.get(f"{FLEET_API}/devices", headers=reader)).status == 200


async def test_unknown_tokens_and_devices_are_404(fleet: Any) -> None:
    for method, path in [
        ("DELETE", f"{TOKENS}/nope"),
        ("POST", f"{FLEET_API}/devices/nope/revoke"),
        ("GET", f"{FLEET_API}/devices/nope"),
    ]:
        assert (await refusal(await fleet.request(method, path, headers=admin())))[0] == 404


async def test_the_signing_keys_document_is_signed_by_the_service_and_its_digest_answered(
    fleet: Any, tmp_path: Path
) -> None:
    credential = await enrolled(fleet)
    assert (await refusal(await fleet.get(KEYS)))[0] == 401
    answer = SigningKeys.from_json(await (await fleet.get(KEYS, headers=device_headers(credential))).json())
    again = SigningKeys.from_json(await (await fleet.get(KEYS, headers=device_headers(credential))).json())
    assert again == answer  # made once per key set
    _, keys = decode_keys_document(answer.document)
    signer = fleet.app[signer_key]
    infos = signer.keys()
    assert [k.fingerprint for k in keys] == [k.fingerprint for k in infos]
    store = TrustStore(tmp_path / "device-gnupg")
    store.import_public_key(signer.export_public())
    assert store.verify(answer.document.encode(), answer.signature) == keys[0].fingerprint
    digest = (await (await check_in(fleet, credential)).json())["keys_digest"]
    assert digest == hashlib.sha256(answer.document.encode()).hexdigest()
