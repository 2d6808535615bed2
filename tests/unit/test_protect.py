"""Field encryption (SM4-GCM / AES-256-GCM with key ids) and the blind index."""

from __future__ import annotations

import base64

import pytest

from gateway.protect import KeyRing, TokenError, sm3_hex

SM4_A = "00112233445566778899aabbccddeeff"
SM4_B = "ffeeddccbbaa99887766554433221100"
AES_C = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
INDEX = "5f" * 32
RESIDENT_ID = "11010519491231002X"


def ring(keys: dict[str, str], current: str, algorithm: str = "sm4-gcm") -> KeyRing:
    return KeyRing.from_hex(keys, current, algorithm, INDEX)


@pytest.mark.parametrize(("algorithm", "key"), [("sm4-gcm", SM4_A), ("aes-256-gcm", AES_C)])
def test_a_value_round_trips_and_its_token_names_cipher_and_key(algorithm: str, key: str) -> None:
    keys = ring({"k1": key}, "k1", algorithm)

    token = keys.encrypt(RESIDENT_ID.encode(), "applications.credential_no")

    assert token.startswith(f"ywtb1:{algorithm}:k1:")
    assert RESIDENT_ID not in token
    assert keys.decrypt(token, "applications.credential_no") == RESIDENT_ID.encode()
    # a fresh nonce each time: equal values do not give equal tokens
    assert keys.encrypt(RESIDENT_ID.encode(), "applications.credential_no") != token


def test_sm4_gcm_matches_the_gmssl_implementation() -> None:
    from gmssl_pyx import sm4_gcm_decrypt

    keys = ring({"k1": SM4_A}, "k1")
    token = keys.encrypt(b"hello", "ctx")
    raw = base64.b64decode(token.split(":", 3)[3])
    nonce, sealed, tag = raw[:12], raw[12:-16], raw[-16:]
    aad = b"ywtb1|ctx|sm4-gcm|k1"

    assert bytes(sm4_gcm_decrypt(bytes.fromhex(SM4_A), nonce, aad, sealed, tag)) == b"hello"


def test_after_rotation_old_tokens_still_open_and_new_ones_use_the_new_key() -> None:
    old = ring({"a": SM4_A}, "a")
    token_a = old.encrypt(b"13812345678", "ctx")
    rotated = ring({"a": SM4_A, "b": SM4_B}, "b")

    token_b = rotated.encrypt(b"13812345678", "ctx")

    assert rotated.decrypt(token_a, "ctx") == b"13812345678"
    assert token_b.startswith("ywtb1:sm4-gcm:b:")
    assert not rotated.is_current(token_a) and rotated.is_current(token_b)
    retired = ring({"b": SM4_B}, "b")
    assert retired.decrypt(token_b, "ctx") == b"13812345678"
    with pytest.raises(TokenError, match="unknown key id 'a'"):
        retired.decrypt(token_a, "ctx")


def test_switching_cipher_keeps_old_tokens_readable() -> None:
    sm4 = ring({"a": SM4_A}, "a")
    token = sm4.encrypt(b"x", "ctx")
    both = ring({"a": SM4_A, "c": AES_C}, "c", "aes-256-gcm")

    assert both.decrypt(token, "ctx") == b"x"
    assert both.encrypt(b"x", "ctx").startswith("ywtb1:aes-256-gcm:c:")


@pytest.mark.parametrize("position", [0, 5, 12, -1])
def test_a_changed_byte_is_detected(position: int) -> None:
    keys = ring({"a": SM4_A}, "a")
    token = keys.encrypt(RESIDENT_ID.encode(), "ctx")
    raw = bytearray(base64.b64decode(token.split(":", 3)[3]))
    raw[position] ^= 0x01
    tampered = ":".join([*token.split(":", 3)[:3], base64.b64encode(bytes(raw)).decode()])

    with pytest.raises(TokenError, match="fails authentication"):
        keys.decrypt(tampered, "ctx")


def test_a_token_moved_to_another_column_does_not_open() -> None:
    keys = ring({"a": SM4_A}, "a")
    token = keys.encrypt("张三".encode(), "callbacks.body")

    with pytest.raises(TokenError):
        keys.decrypt(token, "timeline.data")


def test_a_token_relabelled_with_another_key_id_does_not_open() -> None:
    keys = ring({"a": SM4_A, "b": SM4_A}, "a")
    token = keys.encrypt(b"x", "ctx")

    with pytest.raises(TokenError):
        keys.decrypt(token.replace(":a:", ":b:", 1), "ctx")


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="128-bit"):
        ring({"a": AES_C}, "a", "sm4-gcm")
    with pytest.raises(ValueError, match="not among the keys"):
        ring({"a": SM4_A}, "b")
    with pytest.raises(ValueError, match="hex"):
        ring({"a": "not hex"}, "a")


def test_the_blind_index_is_stable_keyed_and_reveals_nothing() -> None:
    keys = ring({"a": SM4_A}, "a")
    other = KeyRing.from_hex({"a": SM4_A}, "a", "sm4-gcm", "6e" * 32)

    index = keys.blind_index(f"resident_id:{RESIDENT_ID}")

    assert index == keys.blind_index(f"resident_id:{RESIDENT_ID}")
    assert index != keys.blind_index("resident_id:110105194912310021")
    assert index != other.blind_index(f"resident_id:{RESIDENT_ID}")
    assert len(index) == 64 and RESIDENT_ID not in index
    assert index != sm3_hex(f"credential\x00resident_id:{RESIDENT_ID}".encode())
