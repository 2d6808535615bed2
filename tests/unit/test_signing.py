"""The request signing scheme: known answers, and every way a request can fail to verify."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from adapters.signing import (
    MemoryNonceStore,
    canonical_string,
    get_algorithm,
    sign_request,
    verify_request,
    verify_signature,
)
from schemas.errors import Unauthorized

SHARED_SECRET = {"hmac-sha256", "hmac-sm3"}


def verify(headers: dict[str, str], **overrides: Any) -> str:
    """``verify_request`` of the standard request with ``headers`` (keywords override)."""
    arguments: dict[str, Any] = {
        "lookup_secret": lookup,
        "allowed_algorithms": SHARED_SECRET,
        "now": NOW,
    } | overrides
    return verify_request("POST", PATH, BODY, headers, **arguments)


def refusal(headers: dict[str, str], **overrides: Any) -> Unauthorized:
    """The ``Unauthorized`` that verifying the standard request with ``headers`` raises."""
    with pytest.raises(Unauthorized) as caught:
        verify(headers, **overrides)
    return caught.value


APP_ID = "ywtb-sgcc-sh"
SECRET = "s3cret-for-tests-only"
NOW = 1_718_000_000.0  # unix seconds
NONCE = "0123456789abcdef0123456789abcdef"
PATH = "/api/v1/projects/2020-310115-44-03-000001"
BODY = '{"XMDM":"2020-310115-44-03-000001","备注":"一证办电"}'.encode()


def lookup(app_id: str) -> str | None:
    return SECRET if app_id == APP_ID else None


def signed(
    method: str = "POST", path: str = PATH, body: bytes = BODY, algorithm: str = "hmac-sha256"
) -> dict[str, str]:
    return sign_request(
        method, path, body, app_id=APP_ID, secret=SECRET, algorithm=algorithm, now=NOW, nonce=NONCE
    )


def expected_message(method: str, path: str, timestamp_ms: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method}\n{path}\n{timestamp_ms}\n{NONCE}\n{digest}".encode()


def test_cryptography_sm3_matches_the_gbt_32905_vector() -> None:
    digest = hashes.Hash(hashes.SM3())
    digest.update(b"abc")
    assert (
        digest.finalize().hex()
        == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


def test_hmac_sha256_headers_match_an_independent_computation() -> None:
    headers = signed()

    message = expected_message("POST", PATH, 1_718_000_000_000, BODY)
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert headers == {
        "X-App-Id": APP_ID,
        "X-Timestamp": "1718000000000",
        "X-Nonce": NONCE,
        "X-Signature": expected,
        "X-Sign-Alg": "hmac-sha256",
    }


def test_hmac_sm3_signature_matches_an_independent_computation() -> None:
    headers = signed(algorithm="hmac-sm3")

    mac = crypto_hmac.HMAC(SECRET.encode(), hashes.SM3())
    mac.update(expected_message("POST", PATH, 1_718_000_000_000, BODY))
    assert headers["X-Signature"] == mac.finalize().hex()
    assert headers["X-Sign-Alg"] == "hmac-sm3"


def test_query_is_signed_sorted_so_parameter_order_does_not_matter() -> None:
    assert canonical_string("get", "/p?b=2&a=1&a=0", 1, NONCE, b"") == canonical_string(
        "GET", "/p?a=0&a=1&b=2", 1, NONCE, b""
    )
    assert canonical_string("GET", "/p?a=0&a=1&b=2", 1, NONCE, b"").split(b"\n")[1] == (
        b"/p?a=0&a=1&b=2"
    )


def test_percent_encoded_and_plain_paths_sign_alike() -> None:
    headers = signed(path="/api/v1/items/%E9%A1%B9%E7%9B%AE")

    assert (
        verify_request(
            "POST",
            "/api/v1/items/项目",
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW,
        )
        == APP_ID
    )


def test_empty_body_signs_the_digest_of_nothing() -> None:
    headers = signed(method="GET", body=b"")

    message = expected_message("GET", PATH, 1_718_000_000_000, b"")
    assert headers["X-Signature"] == hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("algorithm", sorted(SHARED_SECRET))
def test_a_signed_request_verifies_and_names_its_app(algorithm: str) -> None:
    headers = signed(algorithm=algorithm)

    assert verify(headers) == APP_ID


def test_header_names_are_matched_case_insensitively() -> None:
    headers = {name.lower(): value for name, value in signed().items()}

    assert verify(headers) == APP_ID


def test_fresh_timestamp_and_nonce_on_every_call() -> None:
    first = sign_request("GET", PATH, b"", app_id=APP_ID, secret=SECRET)
    second = sign_request("GET", PATH, b"", app_id=APP_ID, secret=SECRET)

    assert first["X-Nonce"] != second["X-Nonce"]
    assert first["X-Signature"] != second["X-Signature"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PATH, BODY + b" "),
        ("POST", PATH.replace("000001", "000002"), BODY),
        ("PUT", PATH, BODY),
        ("POST", PATH + "?x=1", BODY),
    ],
    ids=["body", "path", "method", "query"],
)
def test_a_tampered_request_is_rejected(method: str, path: str, body: bytes) -> None:
    headers = signed()

    with pytest.raises(Unauthorized) as caught:
        verify_request(
            method,
            path,
            body,
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW,
        )
    assert caught.value.code == "bad_signature"


def test_a_tampered_timestamp_is_rejected() -> None:
    headers = signed() | {"X-Timestamp": "1718000001000"}

    assert refusal(headers).code == "bad_signature"


def test_a_tampered_nonce_is_rejected() -> None:
    headers = signed() | {"X-Nonce": "another-nonce"}

    assert refusal(headers).code == "bad_signature"


def test_a_signature_made_with_another_secret_is_rejected() -> None:
    headers = sign_request("POST", PATH, BODY, app_id=APP_ID, secret="wrong", now=NOW, nonce=NONCE)

    assert refusal(headers).code == "bad_signature"


def test_switching_the_algorithm_header_breaks_the_signature() -> None:
    headers = signed(algorithm="hmac-sha256") | {"X-Sign-Alg": "hmac-sm3"}

    assert refusal(headers).code == "bad_signature"


@pytest.mark.parametrize("skew_s", [301.0, -301.0])
def test_a_timestamp_outside_the_window_is_rejected(skew_s: float) -> None:
    headers = signed()

    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            PATH,
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW + skew_s,
        )
    assert caught.value.code == "stale_timestamp"


def test_a_timestamp_at_the_edge_of_the_window_is_accepted() -> None:
    headers = signed()

    app_id = verify_request(
        "POST",
        PATH,
        BODY,
        headers,
        lookup_secret=lookup,
        allowed_algorithms=SHARED_SECRET,
        now=NOW + 300,
    )
    assert app_id == APP_ID


def test_an_unknown_app_is_rejected() -> None:
    headers = signed() | {"X-App-Id": "someone-else"}

    refused = refusal(headers)
    assert refused.code == "unknown_app"
    assert "someone-else" in refused.detail


@pytest.mark.parametrize(
    "header", ["X-App-Id", "X-Timestamp", "X-Nonce", "X-Signature", "X-Sign-Alg"]
)
def test_a_missing_header_is_named(header: str) -> None:
    headers = signed()
    del headers[header]

    refused = refusal(headers)
    assert refused.code == "missing_header"
    assert header in refused.detail


def test_a_timestamp_that_is_not_milliseconds_is_rejected() -> None:
    headers = signed() | {"X-Timestamp": "2024-06-10T06:13:20Z"}

    assert refusal(headers).code == "bad_header"


def test_an_unregistered_or_disallowed_algorithm_is_rejected() -> None:
    assert refusal(signed() | {"X-Sign-Alg": "md5"}).code == "unsupported_algorithm"

    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            PATH,
            BODY,
            signed(algorithm="hmac-sha256"),
            lookup_secret=lookup,
            now=NOW,
            allowed_algorithms={"hmac-sm3"},
        )
    assert caught.value.code == "unsupported_algorithm"


def test_signing_with_an_unknown_algorithm_fails_loudly() -> None:
    with pytest.raises(ValueError, match="md5"):
        get_algorithm("md5")


def test_verify_signature_exposes_the_nonce_for_the_callers_store() -> None:
    result = verify_signature(
        "POST",
        PATH,
        BODY,
        signed(),
        lookup_secret=lookup,
        allowed_algorithms=SHARED_SECRET,
        now=NOW,
    )

    assert (result.app_id, result.nonce, result.timestamp_ms, result.algorithm) == (
        APP_ID,
        NONCE,
        1_718_000_000_000,
        "hmac-sha256",
    )


def test_a_replayed_nonce_is_rejected_by_the_plugged_store() -> None:
    store = MemoryNonceStore()
    headers = signed()

    verify_request(
        "POST",
        PATH,
        BODY,
        headers,
        lookup_secret=lookup,
        allowed_algorithms=SHARED_SECRET,
        now=NOW,
        check_nonce=store.claim,
    )
    with pytest.raises(Unauthorized) as caught:
        verify_request(
            "POST",
            PATH,
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW,
            check_nonce=store.claim,
        )
    assert caught.value.code == "replayed_nonce"


def test_a_forged_request_does_not_burn_the_nonce() -> None:
    store = MemoryNonceStore()
    headers = signed()

    with pytest.raises(Unauthorized):
        verify_request(
            "POST",
            PATH,
            BODY + b"x",
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW,
            check_nonce=store.claim,
        )
    assert (
        verify_request(
            "POST",
            PATH,
            BODY,
            headers,
            lookup_secret=lookup,
            allowed_algorithms=SHARED_SECRET,
            now=NOW,
            check_nonce=store.claim,
        )
        == APP_ID
    )


def test_the_memory_nonce_store_forgets_after_its_ttl() -> None:
    clock = [0.0]
    store = MemoryNonceStore(ttl_s=600, clock=lambda: clock[0])

    assert store.claim(APP_ID, NONCE)
    assert not store.claim(APP_ID, NONCE)
    assert store.claim("other-app", NONCE)
    clock[0] = 601.0
    assert store.claim(APP_ID, NONCE)
