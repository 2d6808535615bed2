"""The sm2-sm3 signature: cross-checked against a second SM2 (duanhongyi's pure-Python gmssl),
the published example of GB/T 32918.5 / GM/T 0003.5, and every way a request can fail."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from gmssl.sm2 import CryptSM2

from adapters.signing import (
    ALGORITHMS,
    Sm2Algorithm,
    canonical_string,
    sign_request,
    verify_request,
)
from schemas.errors import Unauthorized

SM2 = ALGORITHMS["sm2-sm3"]
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123  # order of the curve

APP_ID = "ywtb-sgcc-sh"
NOW = 1_718_000_000.0
NONCE = "0123456789abcdef0123456789abcdef"
PATH = "/api/v1/projects/2020-310115-44-03-000001?b=2&a=1"
BODY = '{"XMDM":"2020-310115-44-03-000001","备注":"一证办电"}'.encode()
MESSAGE = canonical_string("POST", PATH, 1_718_000_000_000, NONCE, BODY)

# Test keys, generated once for these tests.
OUR_PRIVATE = "28183740b9f43d0740e893096bbb477e721962bf35b85c6ef48a197c6ad03376"
OUR_PUBLIC = (
    "041c38e7bb8aca4fb1ca6e0628bc2b73169417c9fdec7dbf49959e7f0345c476fd"
    "ee423bc09feb7a69f609e54fb0670cb4bcdebd7860d874aed126b9fd678c05e2"
)
OTHER_PRIVATE = "ceda2b5d80be94cc1625d0007dd126537504d998f966801791c81ce4c9aa6da9"
OTHER_PUBLIC = (
    "0442ccae4ae721f11b21482c6cdc591c3df09aeb93a4316cefe5400e4f55f2e2a1"
    "c2a7b834715a18e984930e035ef8a3fec933a7ff5cade1206e055ce21c0649f7"
)

# GB/T 32918.5-2017 / GM/T 0003.5-2012 Annex A: signature on the recommended curve,
# signer ID "1234567812345678", message "message digest".
EXAMPLE_PRIVATE = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
EXAMPLE_PUBLIC = (
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
EXAMPLE_MESSAGE = b"message digest"
EXAMPLE_K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
EXAMPLE_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
EXAMPLE_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA


def reference(public_key: str, private_key: str = "") -> CryptSM2:
    """The second SM2, with the default signer ID built into its Z; signatures as bare r‖s hex."""
    bare = public_key.removeprefix("04")
    # CryptSM2 drops a "04" prefix with lstrip("04"), which also eats X's own leading 0s and 4s.
    assert not bare.startswith("04"), "pick a test key whose X does not begin with 04"
    return CryptSM2(private_key=private_key, public_key=bare)


def der_from_bare(signature: str) -> str:
    return encode_dss_signature(int(signature[:64], 16), int(signature[64:], 16)).hex()


def bare_from_der(signature: str) -> str:
    r, s = decode_dss_signature(bytes.fromhex(signature))
    return f"{r:064x}{s:064x}"


def lookup(app_id: str) -> str | None:
    return OUR_PUBLIC if app_id == APP_ID else None


def signed(private_key: str = OUR_PRIVATE) -> dict[str, str]:
    return sign_request(
        "POST",
        PATH,
        BODY,
        app_id=APP_ID,
        secret=private_key,
        algorithm="sm2-sm3",
        now=NOW,
        nonce=NONCE,
    )


def test_the_signature_is_lower_case_hex_of_a_der_sequence_of_r_and_s() -> None:
    signature = SM2.sign(OUR_PRIVATE, MESSAGE)

    r, s = decode_dss_signature(bytes.fromhex(signature))
    assert 0 < r < N and 0 < s < N
    assert signature == encode_dss_signature(r, s).hex()


def test_a_signature_we_make_verifies_in_the_reference() -> None:
    signature = SM2.sign(OUR_PRIVATE, MESSAGE)

    assert reference(OUR_PUBLIC).verify_with_sm3(bare_from_der(signature), MESSAGE)
    assert not reference(OUR_PUBLIC).verify_with_sm3(bare_from_der(signature), MESSAGE + b" ")


def test_a_signature_the_reference_makes_verifies_with_ours() -> None:
    signature = der_from_bare(reference(OUR_PUBLIC, OUR_PRIVATE).sign_with_sm3(MESSAGE))

    assert SM2.verify(OUR_PUBLIC, MESSAGE, signature)
    assert not SM2.verify(OUR_PUBLIC, MESSAGE + b" ", signature)


def test_the_reference_reproduces_the_published_example() -> None:
    signature = reference(EXAMPLE_PUBLIC, EXAMPLE_PRIVATE).sign_with_sm3(EXAMPLE_MESSAGE, EXAMPLE_K)

    assert signature == f"{EXAMPLE_R:064x}{EXAMPLE_S:064x}"


def test_the_published_example_signature_verifies() -> None:
    signature = encode_dss_signature(EXAMPLE_R, EXAMPLE_S).hex()

    assert SM2.verify(EXAMPLE_PUBLIC, EXAMPLE_MESSAGE, signature)
    assert SM2.verify(EXAMPLE_PUBLIC.lower(), EXAMPLE_MESSAGE, signature.upper())
    assert not SM2.verify(EXAMPLE_PUBLIC, b"message digesT", signature)


def test_our_signature_with_the_published_key_verifies_in_the_reference() -> None:
    signature = SM2.sign(EXAMPLE_PRIVATE, EXAMPLE_MESSAGE)

    assert reference(EXAMPLE_PUBLIC).verify_with_sm3(bare_from_der(signature), EXAMPLE_MESSAGE)


def test_the_public_key_is_accepted_with_or_without_the_04_prefix() -> None:
    signature = SM2.sign(OUR_PRIVATE, MESSAGE)

    assert SM2.verify(OUR_PUBLIC, MESSAGE, signature)
    assert SM2.verify(OUR_PUBLIC[2:], MESSAGE, signature)


def test_a_signed_request_verifies_with_the_public_key() -> None:
    first, second = signed(), signed()

    assert first["X-Sign-Alg"] == "sm2-sm3"
    assert first["X-Signature"] != second["X-Signature"]  # SM2 draws a fresh k every time
    for headers in (first, second):
        assert (
            verify_request(
                "POST",
                PATH,
                BODY,
                headers,
                lookup_secret=lookup,
                allowed_algorithms={"sm2-sm3"},
                now=NOW,
            )
            == APP_ID
        )


@pytest.mark.parametrize(
    ("path", "body", "changed_headers"),
    [
        (PATH, BODY + b" ", {}),
        (PATH.replace("000001?", "000002?"), BODY, {}),
        (PATH, BODY, {"X-Timestamp": "1718000001000"}),
        (PATH, BODY, {"X-Nonce": "another-nonce"}),
    ],
    ids=["body", "path", "timestamp", "nonce"],
)
def test_a_tampered_request_is_rejected(
    path: str, body: bytes, changed_headers: dict[str, str]
) -> None:
    headers = signed() | changed_headers

    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            path,
            body,
            headers,
            lookup_secret=lookup,
            allowed_algorithms={"sm2-sm3"},
            now=NOW,
        )
    assert caught.value.code == "bad_signature"


def test_a_signature_by_another_key_is_rejected() -> None:
    headers = signed(private_key=OTHER_PRIVATE)

    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            PATH,
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms={"sm2-sm3"},
            now=NOW,
        )
    assert caught.value.code == "bad_signature"
    assert not SM2.verify(OUR_PUBLIC, MESSAGE, SM2.sign(OTHER_PRIVATE, MESSAGE))
    assert SM2.verify(OTHER_PUBLIC, MESSAGE, SM2.sign(OTHER_PRIVATE, MESSAGE))


def test_the_signer_id_is_part_of_the_signature() -> None:
    alice = Sm2Algorithm("sm2-sm3", signer_id=b"ALICE123@YAHOO.COM")

    signature = alice.sign(OUR_PRIVATE, MESSAGE)

    assert alice.verify(OUR_PUBLIC, MESSAGE, signature)
    assert not SM2.verify(OUR_PUBLIC, MESSAGE, signature)


@pytest.mark.parametrize(
    "signature",
    [
        "not hex",
        "00",
        "3044",
        encode_dss_signature(EXAMPLE_R, EXAMPLE_S).hex()[:-2],
        f"{EXAMPLE_R:064x}{EXAMPLE_S:064x}",  # bare r‖s is not the wire form
    ],
    ids=["not-hex", "one-byte", "truncated-header", "truncated", "bare-r-s"],
)
def test_a_malformed_signature_is_wrong_not_an_error(signature: str) -> None:
    assert not SM2.verify(EXAMPLE_PUBLIC, EXAMPLE_MESSAGE, signature)

    headers = signed() | {"X-Signature": signature}
    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            PATH,
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms={"sm2-sm3"},
            now=NOW,
        )
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize(
    "private_key", ["", "s3cret-for-tests-only", OUR_PRIVATE[:-2], "00" * 32, f"{N:064x}"]
)
def test_a_malformed_private_key_fails_loudly(private_key: str) -> None:
    with pytest.raises(ValueError, match="SM2 private key"):
        SM2.sign(private_key, MESSAGE)


@pytest.mark.parametrize(
    "public_key", ["", OUR_PRIVATE, OUR_PUBLIC[:-2] + "00", "05" + OUR_PUBLIC[2:]]
)
def test_a_malformed_public_key_fails_loudly(public_key: str) -> None:
    signature = SM2.sign(OUR_PRIVATE, MESSAGE)

    with pytest.raises(ValueError, match="SM2 public key"):
        SM2.verify(public_key, MESSAGE, signature)
