"""Edges accept a manifest only if it carries one good signature by a key they trust.

The supply-chain lines of THREATS.md, with real keys made by plain gpg (tests/gpg_keys.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gpg_keys import (
    DAY,
    REVOKED_DATA,
    KeyFactory,
    KeySet,
    gpg,
)
from wire.errors import InvalidInput
from wire.signatures import SignatureRefused, TrustedKeyError, TrustedKeyNotFound, TrustStore

DATA = b'{"artifacts":[],"name":"app","version":"1.4.0"}'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrustStore]:
    trust = TrustStore(tmp_path / "trust")
    try:
        yield trust
    finally:
        trust.close()


def refusal(store: TrustStore, data: bytes, signature: bytes | str, **kwargs: object) -> str:
    with pytest.raises(SignatureRefused) as caught:
        store.verify(data, signature, **kwargs)  # type: ignore[arg-type]
    assert caught.value.status == 422
    return caught.value.reason


def test_a_good_signature_by_a_trusted_key_answers_its_full_fingerprint(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    assert store.import_public_key(keys.alice.public) == keys.alice.fingerprint
    signature = key_factory.sign(keys.alice, DATA)
    assert store.verify(DATA, signature) == keys.alice.fingerprint
    assert store.verify(DATA, signature.decode()) == keys.alice.fingerprint


def test_rsa_keys_are_trusted_like_ed25519_keys(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.rsa.public)
    assert store.verify(DATA, key_factory.sign(keys.rsa, DATA)) == keys.rsa.fingerprint


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (b"", "no signature"),
        (b"  \n", "no signature"),
        (b"garbage", "not an ASCII-armored detached signature"),
        (b"\x89\x01\x02binary", "ASCII-armored"),
        (b"-----BEGIN PGP SIGNATURE-----\n\nnot base64\n-----END PGP SIGNATURE-----\n", "no OpenPGP signature"),
    ],
)
def test_a_missing_or_garbage_signature_is_refused(
    store: TrustStore, keys: KeySet, signature: bytes, reason: str
) -> None:
    store.import_public_key(keys.alice.public)
    assert reason in refusal(store, DATA, signature)


def test_a_binary_signature_is_refused_because_the_contract_is_armored(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    store.import_public_key(keys.alice.public)
    assert "ASCII-armored" in refusal(store, DATA, key_factory.sign(keys.alice, DATA, armor=False))


def test_a_signature_by_a_key_the_node_does_not_trust_is_refused(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    store.import_public_key(keys.alice.public)
    reason = refusal(store, DATA, key_factory.sign(keys.mallory, DATA))
    assert "does not trust" in reason and keys.mallory.fingerprint in reason


def test_a_signer_outside_the_trusted_list_for_this_call_is_refused(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    store.import_public_key(keys.alice.public)
    store.import_public_key(keys.bob.public)
    signature = key_factory.sign(keys.bob, DATA)
    reason = refusal(store, DATA, signature, trusted={keys.alice.fingerprint})
    assert f"signer {keys.bob.fingerprint} is not a trusted key" in reason
    assert store.verify(DATA, signature, trusted={keys.bob.fingerprint.lower()}) == keys.bob.fingerprint


def test_two_signatures_in_one_block_are_refused_even_if_both_are_good(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    store.import_public_key(keys.alice.public)
    store.import_public_key(keys.bob.public)
    both = key_factory.sign_with_all([keys.alice, keys.bob], DATA)
    assert "2 signatures" in refusal(store, DATA, both)


def test_two_concatenated_signatures_are_refused(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.alice.public)
    twice = key_factory.sign(keys.alice, DATA) + key_factory.sign(keys.mallory, DATA)
    assert "exactly one signature" in refusal(store, DATA, twice)


def test_a_signature_by_an_expired_key_is_refused(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.expired.public)
    signed_while_valid = key_factory.sign(keys.expired, DATA, days_ago=9.9)
    assert "signing key has expired" in refusal(store, DATA, signed_while_valid)


def test_an_expired_signature_is_refused(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.made_in_past.public)
    expired = key_factory.sign(keys.made_in_past, DATA, days_ago=9, sig_expire="1d")
    assert "signature has expired" in refusal(store, DATA, expired)


def test_a_signature_by_a_revoked_key_is_refused(store: TrustStore, keys: KeySet) -> None:
    store.import_public_key(keys.revoked.public)
    assert "revoked" in refusal(store, REVOKED_DATA, keys.revoked_signature)


def test_a_revocation_reaching_the_node_turns_a_good_signature_into_a_refused_one(
    store: TrustStore, keys: KeySet
) -> None:
    store.import_public_key(keys.revoked_public_before)
    assert store.verify(REVOKED_DATA, keys.revoked_signature) == keys.revoked.fingerprint
    assert store.import_public_key(keys.revoked.public) == keys.revoked.fingerprint
    assert "revoked" in refusal(store, REVOKED_DATA, keys.revoked_signature)


@pytest.mark.parametrize("index", [0, len(DATA) // 2, len(DATA) - 1])
def test_data_changed_by_one_byte_is_refused(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory, index: int
) -> None:
    store.import_public_key(keys.alice.public)
    signature = key_factory.sign(keys.alice, DATA)
    tampered = bytearray(DATA)
    tampered[index] ^= 0x01
    assert "bad signature" in refusal(store, bytes(tampered), signature)


def test_data_with_a_byte_added_or_removed_is_refused(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.alice.public)
    signature = key_factory.sign(keys.alice, DATA)
    assert "bad signature" in refusal(store, DATA + b" ", signature)
    assert "bad signature" in refusal(store, DATA[:-1], signature)


def test_a_good_signature_over_other_data_is_refused(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    store.import_public_key(keys.alice.public)
    assert "bad signature" in refusal(store, DATA, key_factory.sign(keys.alice, b"other manifest"))


def test_a_signature_that_carries_its_own_data_is_refused(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    store.import_public_key(keys.alice.public)
    attached = gpg(keys.alice.home, "--local-user", keys.alice.fingerprint, "--sign", "--armor", stdin=DATA).stdout
    clearsigned = gpg(keys.alice.home, "--local-user", keys.alice.fingerprint, "--clearsign", stdin=DATA).stdout
    assert "detached signature" in refusal(store, DATA, attached)
    assert "detached signature" in refusal(store, DATA, clearsigned)


def test_a_key_and_signature_from_a_clock_minutes_ahead_are_accepted(
    store: TrustStore, key_factory: KeyFactory
) -> None:
    ahead = -300 / DAY  # five minutes in this node's future
    key = key_factory.make_key("Skewed Clock <skew@example.com>", created_days_ago=ahead)
    assert store.import_public_key(key.public) == key.fingerprint
    assert store.verify(DATA, key_factory.sign(key, DATA, days_ago=ahead)) == key.fingerprint


def test_rotation_accepts_old_and_new_keys_until_the_old_one_is_removed(
    store: TrustStore, keys: KeySet, key_factory: KeyFactory
) -> None:
    old, new = keys.alice, keys.bob
    store.import_public_key(old.public)
    store.import_public_key(new.public)
    by_old, by_new = key_factory.sign(old, DATA), key_factory.sign(new, DATA)
    assert store.verify(DATA, by_old) == old.fingerprint
    assert store.verify(DATA, by_new) == new.fingerprint
    store.remove(old.fingerprint)
    assert store.fingerprints() == {new.fingerprint}
    assert "does not trust" in refusal(store, DATA, by_old)
    assert store.verify(DATA, by_new) == new.fingerprint


def test_a_node_that_trusts_no_key_refuses_everything(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    assert "trusts no signing key" in refusal(store, DATA, key_factory.sign(keys.alice, DATA))


def test_import_refuses_private_key_material(store: TrustStore, keys: KeySet) -> None:
    with pytest.raises(TrustedKeyError, match="Private key material"):
        store.import_public_key(keys.alice.private)
    relabelled = keys.alice.private.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK")
    with pytest.raises(TrustedKeyError, match="Private key material"):
        store.import_public_key(relabelled)
    assert store.fingerprints() == set()
    assert not list((store.homedir / "private-keys-v1.d").glob("*"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "exactly one ASCII-armored public key block"),
        ("hello", "exactly one ASCII-armored public key block"),
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n", "no OpenPGP"),
    ],
)
def test_import_refuses_garbage(store: TrustStore, text: str, reason: str) -> None:
    with pytest.raises(TrustedKeyError, match=reason):
        store.import_public_key(text)
    assert store.fingerprints() == set()


def test_import_refuses_several_keys_at_once(store: TrustStore, keys: KeySet, key_factory: KeyFactory) -> None:
    with pytest.raises(TrustedKeyError, match="exactly one"):
        store.import_public_key(keys.alice.public + keys.bob.public)
    home = key_factory.new_home()
    for key in (keys.alice, keys.bob):
        gpg(home, "--import", stdin=key.public.encode())
    one_block = gpg(home, "--armor", "--export", keys.alice.fingerprint, keys.bob.fingerprint).stdout.decode()
    with pytest.raises(TrustedKeyError, match="found 2 keys"):
        store.import_public_key(one_block)
    assert store.fingerprints() == set()


def test_removing_a_key_that_is_not_trusted_is_a_404(store: TrustStore, keys: KeySet) -> None:
    with pytest.raises(TrustedKeyNotFound) as caught:
        store.remove(keys.alice.fingerprint)
    assert caught.value.status == 404
    with pytest.raises(TrustedKeyError):
        store.remove("ABCD")


def test_refusals_of_keys_are_400s_and_of_signatures_422s() -> None:
    assert issubclass(TrustedKeyError, InvalidInput) and TrustedKeyError.status == 400
    assert SignatureRefused.status == 422


def test_a_trust_store_deep_in_the_filesystem_still_works(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "trust"
    with TrustStore(deep) as trust:
        trust.import_public_key(keys.alice.public)
        assert trust.verify(DATA, key_factory.sign(keys.alice, DATA)) == keys.alice.fingerprint
    assert (deep / "pubring.kbx").exists()
    assert deep.stat().st_mode & 0o777 == 0o700
