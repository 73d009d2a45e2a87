"""The Distribution service's signing keys, checked by plain gpg in a home of its own."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from distribution.signing import (
    KeyInfo,
    Signer,
    SigningKeyError,
    SigningKeyExists,
    SigningKeyNotFound,
    SigningStateError,
)
from tests.gpg_keys import (
    KeyFactory,
    KeySet,
    TestKey,
    gpg,
    verify_with_plain_gpg,
)
from wire.signatures import TrustStore

UID = "Distribution Service <distribution@example.com>"
DATA = b'{"artifacts":[],"format":1,"name":"app","version":"1.4.0"}'
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def protected(key_factory: KeyFactory) -> TestKey:
    return key_factory.make_key("Protected <protected@example.com>", passphrase=PASSPHRASE)


@pytest.fixture(scope="module")
def cert_only(key_factory: KeyFactory) -> TestKey:
    return key_factory.make_key("Certify Only <cert@example.com>", usage="cert")


def all_keys(signer: Signer) -> list[KeyInfo]:
    return signer.keys()


def open_signer(root: Path) -> Signer:
    return Signer(root / "gnupg", root / "signing-keys.json")


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[Signer]:
    with open_signer(tmp_path) as opened:
        yield opened


def plain_gpg_verifies(key_factory: KeyFactory, public_key: str, data: bytes, signature: str) -> str:
    """Verify as a user would: a fresh home holding only the exported public key."""
    home = key_factory.new_home()
    gpg(home, "--import", stdin=public_key.encode())
    (home / "manifest.json").write_bytes(data)
    (home / "manifest.json.asc").write_text(signature)
    code, status = verify_with_plain_gpg(home, home / "manifest.json.asc", home / "manifest.json")
    assert code == 0, status
    match = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{40})", status, re.MULTILINE)
    assert match, status
    return match.group(1)


def test_first_start_creates_one_ed25519_default_key(signer: Signer, tmp_path: Path) -> None:
    info = signer.ensure_default_key(UID)
    assert info.alias == "default" and info.default and info.algorithm == "ed25519"
    assert re.fullmatch(r"[0-9A-F]{40}", info.fingerprint)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info.created)
    assert signer.keys() == [info]
    assert signer.ensure_default_key(UID) == info
    assert (tmp_path / "gnupg").stat().st_mode & 0o777 == 0o700
    state = json.loads((tmp_path / "signing-keys.json").read_text())
    assert state["default"] == "default" and state["keys"] == {"default": info.fingerprint}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_restart_keeps_the_same_key(tmp_path: Path) -> None:
    with open_signer(tmp_path) as first:
        created = first.ensure_default_key(UID)
    with open_signer(tmp_path) as second:
        assert second.keys() == [created]
        assert second.ensure_default_key("Another <other@example.com>") == created
        assert second.sign(DATA)


def test_plain_gpg_verifies_a_signature_with_only_the_exported_public_key(
    signer: Signer, key_factory: KeyFactory
) -> None:
    info = signer.ensure_default_key(UID)
    signature = signer.sign(DATA)
    assert signature.startswith("-----BEGIN PGP SIGNATURE-----")
    assert plain_gpg_verifies(key_factory, signer.export_public(), DATA, signature) == info.fingerprint


def test_a_file_is_signed_from_its_position_to_its_end(signer: Signer, key_factory: KeyFactory, tmp_path: Path) -> None:
    """A manifest is signed from the file it was written to, never read whole into memory."""
    info = signer.ensure_default_key(UID)
    data = DATA * (3 * 1024 * 1024 // len(DATA))  # megabytes: more than a pipe holds at once
    path = tmp_path / "manifest"
    path.write_bytes(b"skipped" + data)
    with path.open("rb") as file:
        file.seek(len(b"skipped"))
        signature = signer.sign(file)
    assert plain_gpg_verifies(key_factory, signer.export_public(), data, signature) == info.fingerprint


def test_plain_gpg_refuses_the_signature_over_a_manifest_changed_by_one_byte(
    signer: Signer, key_factory: KeyFactory
) -> None:
    signer.ensure_default_key(UID)
    signature = signer.sign(DATA)
    home = key_factory.new_home()
    gpg(home, "--import", stdin=signer.export_public().encode())
    (home / "m").write_bytes(DATA.replace(b"1.4.0", b"1.4.1"))
    (home / "m.asc").write_text(signature)
    code, status = verify_with_plain_gpg(home, home / "m.asc", home / "m")
    assert code != 0 and "[GNUPG:] BADSIG" in status


def test_an_edge_trust_store_verifies_what_the_signer_signs(signer: Signer, tmp_path: Path) -> None:
    info = signer.ensure_default_key(UID)
    with TrustStore(tmp_path / "edge-trust") as trust:
        assert trust.import_public_key(signer.export_public()) == info.fingerprint
        assert trust.verify(DATA, signer.sign(DATA)) == info.fingerprint


def test_an_imported_key_pair_signs_under_its_alias(signer: Signer, keys: KeySet, key_factory: KeyFactory) -> None:
    default = signer.ensure_default_key(UID)
    imported = signer.import_key_pair("release-2026", keys.alice.private)
    assert imported == KeyInfo("release-2026", keys.alice.fingerprint, False, imported.created, "ed25519")
    signature = signer.sign(DATA, alias="release-2026")
    assert plain_gpg_verifies(key_factory, keys.alice.public, DATA, signature) == keys.alice.fingerprint
    assert plain_gpg_verifies(key_factory, signer.export_public(), DATA, signer.sign(DATA)) == default.fingerprint
    assert [k.alias for k in all_keys(signer)] == ["default", "release-2026"]


def test_the_first_key_imported_becomes_the_default_and_no_key_is_generated(signer: Signer, keys: KeySet) -> None:
    imported = signer.import_key_pair("rsa", keys.rsa.private)
    assert imported.default and imported.algorithm == "rsa2048"
    assert signer.ensure_default_key(UID) == imported
    assert len(signer.keys()) == 1


def test_set_default_changes_the_key_that_signs_and_survives_a_restart(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    with open_signer(tmp_path) as signer:
        signer.ensure_default_key(UID)
        signer.import_key_pair("next", keys.bob.private)
        assert signer.set_default("next").default
        assert {k.alias: k.default for k in all_keys(signer)} == {"default": False, "next": True}
    with open_signer(tmp_path) as restarted:
        assert plain_gpg_verifies(key_factory, keys.bob.public, DATA, restarted.sign(DATA)) == keys.bob.fingerprint
        assert restarted.export_public() == restarted.export_public("next")


def test_the_public_export_holds_no_private_material(signer: Signer, keys: KeySet, key_factory: KeyFactory) -> None:
    signer.ensure_default_key(UID)
    signer.import_key_pair("alice", keys.alice.private)
    for alias in (None, "alice"):
        exported = signer.export_public(alias)
        assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in exported and "PRIVATE KEY" not in exported
        home = key_factory.new_home()
        gpg(home, "--import", stdin=exported.encode())
        assert gpg(home, "--with-colons", "--list-secret-keys").stdout == b""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "ASCII-armored text"),
        ("garbage", "No ASCII-armored private key"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nbm9wZQ==\n-----END PGP PRIVATE KEY BLOCK-----\n", "No private key"),
    ],
)
def test_garbage_is_refused_as_a_signing_key(signer: Signer, text: str, reason: str) -> None:
    with pytest.raises(SigningKeyError, match=reason) as caught:
        signer.import_key_pair("bad", text)
    assert caught.value.status == 400
    assert signer.keys() == []


def test_a_public_key_alone_is_refused_as_a_signing_key(signer: Signer, keys: KeySet) -> None:
    with pytest.raises(SigningKeyError, match="public key only"):
        signer.import_key_pair("public", keys.alice.public)
    assert signer.keys() == []


def test_a_key_that_cannot_sign_is_refused(signer: Signer, cert_only: TestKey) -> None:
    with pytest.raises(SigningKeyError, match="cannot make signatures"):
        signer.import_key_pair("cert", cert_only.private)


def test_an_expired_key_pair_is_refused(signer: Signer, keys: KeySet) -> None:
    with pytest.raises(SigningKeyError, match="expired"):
        signer.import_key_pair("old", keys.expired.private)


def test_a_second_key_under_a_taken_alias_is_a_409_and_changes_nothing(
    signer: Signer, keys: KeySet, tmp_path: Path
) -> None:
    signer.import_key_pair("release", keys.alice.private)
    before = (tmp_path / "signing-keys.json").read_bytes()
    with pytest.raises(SigningKeyExists) as caught:
        signer.import_key_pair("release", keys.bob.private)
    assert caught.value.status == 409
    with pytest.raises(SigningKeyExists, match="already present as alias 'release'"):
        signer.import_key_pair("again", keys.alice.private)
    assert (tmp_path / "signing-keys.json").read_bytes() == before
    assert [k.fingerprint for k in all_keys(signer)] == [keys.alice.fingerprint]


def test_a_protected_key_with_a_wrong_or_missing_passphrase_is_refused(signer: Signer, protected: TestKey) -> None:
    with pytest.raises(SigningKeyError, match="Wrong passphrase"):
        signer.import_key_pair("protected", protected.private, passphrase="wrong")
    with pytest.raises(SigningKeyError, match="protected by a passphrase"):
        signer.import_key_pair("protected", protected.private)
    assert signer.keys() == []


def test_a_passphrase_sent_with_an_open_key_is_unused_and_the_key_still_signs(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    """A passphrase only unlocks: sent with a key that has none, it must not protect the key."""
    with open_signer(tmp_path) as signer:
        signer.import_key_pair("open", keys.alice.private, passphrase="not needed here")
    with open_signer(tmp_path) as restarted:
        signature = restarted.sign(DATA, alias="open")
    assert plain_gpg_verifies(key_factory, keys.alice.public, DATA, signature) == keys.alice.fingerprint


def test_a_protected_key_with_its_passphrase_is_stored_without_it(
    tmp_path: Path, protected: TestKey, key_factory: KeyFactory
) -> None:
    with open_signer(tmp_path) as signer:
        signer.import_key_pair("protected", protected.private, passphrase=PASSPHRASE)
    with open_signer(tmp_path) as restarted:  # a new gpg-agent: nothing cached
        signature = restarted.sign(DATA, alias="protected")
    assert plain_gpg_verifies(key_factory, protected.public, DATA, signature) == protected.fingerprint
    assert PASSPHRASE.encode() not in (tmp_path / "signing-keys.json").read_bytes()


def test_an_unknown_alias_is_a_404(signer: Signer) -> None:
    signer.ensure_default_key(UID)
    for call in (
        lambda: signer.sign(DATA, "nope"),
        lambda: signer.set_default("nope"),
        lambda: signer.export_public("nope"),
    ):
        with pytest.raises(SigningKeyNotFound) as caught:
            call()
        assert caught.value.status == 404


def test_an_invalid_alias_is_refused(signer: Signer, keys: KeySet) -> None:
    with pytest.raises(SigningKeyError, match="Invalid key alias"):
        signer.import_key_pair("../x", keys.alice.private)


def test_a_key_made_before_its_alias_was_recorded_is_adopted_not_duplicated(tmp_path: Path) -> None:
    with open_signer(tmp_path) as signer:
        made = signer.ensure_default_key(UID)
    (tmp_path / "signing-keys.json").unlink()  # as if the process died before writing it
    with open_signer(tmp_path) as restarted:
        assert restarted.ensure_default_key(UID).fingerprint == made.fingerprint


def test_a_state_file_naming_a_missing_key_stops_the_start(tmp_path: Path) -> None:
    state = {"format": 1, "default": "default", "keys": {"default": "A" * 40}}
    (tmp_path / "signing-keys.json").write_text(json.dumps(state))
    with pytest.raises(SigningStateError, match="not in GnuPG home"):
        open_signer(tmp_path)


def test_a_signer_deep_in_the_filesystem_signs_and_stops_its_agent_on_close(
    tmp_path: Path, key_factory: KeyFactory
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "gnupg" / "S.gpg-agent.browser")) > 107
    with open_signer(deep) as signer:
        info = signer.ensure_default_key(UID)
        signature = signer.sign(DATA)
        assert (deep / "gnupg" / "S.gpg-agent").exists()
    assert not (deep / "gnupg" / "S.gpg-agent").exists()
    assert plain_gpg_verifies(key_factory, _public_of(deep), DATA, signature) == info.fingerprint


def _public_of(root: Path) -> str:
    with open_signer(root) as signer:
        return signer.export_public()


@pytest.mark.parametrize("socket_path_bytes", [106, 107, 108])
def test_a_gnupg_home_whose_agent_socket_path_is_at_the_limit_still_signs(
    socket_path_bytes: int, tmp_path: Path
) -> None:
    """gpg-agent refuses a socket path of 107 bytes, though sun_path holds 108 with the NUL: a
    home that deep must go through the short link too, or no key can be made in it."""
    root = tmp_path / "r"
    fill = socket_path_bytes - len(os.fsencode(root / "gnupg" / "S.gpg-agent.browser")) - 1
    assert fill > 0
    deep = root / ("d" * fill)
    assert len(os.fsencode(deep / "gnupg" / "S.gpg-agent.browser")) == socket_path_bytes
    with open_signer(deep) as signer:
        signer.ensure_default_key(UID)
        assert signer.sign(DATA)
