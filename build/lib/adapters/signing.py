"""Request signing: the one scheme every outbound call and every callback endpoint uses.

The signature covers a canonical string, the lines joined by ``"\\n"``::

    GET                                    HTTP method, upper case
    /api/v1/projects/2020-...?a=1&b=2      path, plus the query sorted by name and value
    1718000000000                          X-Timestamp, unix milliseconds
    4f1c...                                X-Nonce
    e3b0c442...                            hex SHA-256 of the body (of b"" when there is none)

and travels in the headers ``X-App-Id``, ``X-Timestamp``, ``X-Nonce``,
``X-Signature`` (lower-case hex) and ``X-Sign-Alg``. Algorithms are pluggable
(``ALGORITHMS``): ``hmac-sha256`` and ``hmac-sm3`` (national, GB/T 32905) with a
shared secret; ``sm2-sm3`` (GB/T 32918, asymmetric: sign with our private key,
verify with the peer's public key).

Verification checks headers, algorithm, timestamp window, app id and signature;
replay protection needs a nonce store, which the caller plugs in as
``check_nonce`` (or checks itself after ``verify_signature``).
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from gmssl_pyx import InvalidValueError, normalize_sm2_public_key, sm2_sign, sm2_verify

from schemas.errors import Unauthorized

HEADER_APP_ID = "X-App-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"
HEADER_ALGORITHM = "X-Sign-Alg"
SIGNING_HEADERS = (
    HEADER_APP_ID,
    HEADER_TIMESTAMP,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_ALGORITHM,
)

DEFAULT_WINDOW_S = 300
MAX_NONCE_LENGTH = 64

SecretLookup = Callable[[str], str | None]
"""App id → its key material (shared secret, or SM2 public key); None if unknown."""

NonceCheck = Callable[[str, str], bool]
"""(app id, nonce) → True the first time it is seen within the window, False on replay."""


class SignatureAlgorithm(Protocol):
    """One value of ``X-Sign-Alg``: makes and checks signatures over the canonical string."""

    @property
    def name(self) -> str:
        """The ``X-Sign-Alg`` value."""
        ...

    def sign(self, key: str, message: bytes) -> str:
        """The signature of ``message`` as lower-case hex."""
        ...

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        """Whether ``signature`` is right for ``message``; constant time."""
        ...


@dataclass(frozen=True)
class HmacAlgorithm:
    """HMAC with a shared secret over a given hash."""

    name: str
    hash_factory: Callable[[], hashes.HashAlgorithm]

    def sign(self, key: str, message: bytes) -> str:
        mac = crypto_hmac.HMAC(key.encode("utf-8"), self.hash_factory())
        mac.update(message)
        return mac.finalize().hex()

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        expected = self.sign(key, message).encode("ascii")
        given = signature.strip().lower().encode("utf-8", "replace")
        return std_hmac.compare_digest(expected, given)


SM2_DEFAULT_SIGNER_ID = b"1234567812345678"
"""The signer ID of GM/T 0009 that both sides use unless they agree on another."""

_SM2_GENERATOR = bytes.fromhex(
    "32c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7"
    "bc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0"
)


@dataclass(frozen=True)
class Sm2Algorithm:
    """SM2 signature with SM3 (GB/T 32918.2, GM/T 0009): our private key signs, the peer's
    public key verifies.

    Keys are hex strings: the signer's is the 32-byte private key (64 digits); the
    verifier's is the public point, uncompressed ``04‖X‖Y`` (130 digits; the bare
    ``X‖Y`` and the compressed form are accepted too). The message is hashed with the
    SM3 Z value of ``signer_id`` and the signer's public key. ``X-Signature`` is the
    lower-case hex of the DER ``SEQUENCE { r INTEGER, s INTEGER }`` of GM/T 0009, not
    the bare r‖s. A malformed key raises ``ValueError``; a malformed signature is
    simply wrong.

    Backed by gmssl-pyx, a C extension over GmSSL 3 with wheels for CPython 3.8-3.14,
    maintained, and taking raw keys and the signer ID. Not tongsuopy (last release
    2023, old OpenSSL base, no signer ID parameter) nor gmssl-fast (a single release
    without a source repository, bare r‖s only, fixed signer ID).
    """

    name: str
    signer_id: bytes = SM2_DEFAULT_SIGNER_ID

    def sign(self, key: str, message: bytes) -> str:
        private_key = _hex_bytes(key, 32, "SM2 private key")
        # gmssl-pyx wants the public key as well, but GmSSL replaces it with [d]G when it
        # sets the private key, so Z always comes from our real public key: any valid
        # point will do here, the generator is one. The cross-check tests guard this.
        try:
            der = sm2_sign(private_key, _SM2_GENERATOR, message, self.signer_id)
        except InvalidValueError:
            raise ValueError("SM2 private key out of range [1, n-2]") from None
        return bytes(der).hex()

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        try:
            public_key = normalize_sm2_public_key(key.strip())
        except InvalidValueError:
            raise ValueError("SM2 public key is not hex of a point on the curve") from None
        try:
            der = bytes.fromhex(signature.strip())
        except ValueError:
            return False
        return bool(der) and bool(sm2_verify(public_key, message, der, self.signer_id))


def _hex_bytes(value: str, length: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.strip())
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise ValueError(f"{what} must be {2 * length} hex digits")
    return raw


ALGORITHMS: dict[str, SignatureAlgorithm] = {
    "hmac-sha256": HmacAlgorithm("hmac-sha256", hashes.SHA256),
    "hmac-sm3": HmacAlgorithm("hmac-sm3", hashes.SM3),
    "sm2-sm3": Sm2Algorithm("sm2-sm3"),
}


def get_algorithm(name: str) -> SignatureAlgorithm:
    """The registered algorithm called ``name``; ``ValueError`` if there is none."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown signature algorithm {name!r} (known: {', '.join(sorted(ALGORITHMS))})"
        ) from None


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request's signing headers established."""

    app_id: str
    nonce: str
    timestamp_ms: int
    algorithm: str


def canonical_target(path: str) -> str:
    """The path, percent-encoded one way, with its query (if any) sorted by name and value."""
    raw_path, _, query = path.partition("?")
    target = quote(unquote(raw_path), safe="/")
    if query:
        pairs = sorted(parse_qsl(query, keep_blank_values=True))
        target += "?" + urlencode(pairs, quote_via=quote, safe="")
    return target


def canonical_string(method: str, path: str, timestamp_ms: int, nonce: str, body: bytes) -> bytes:
    """The bytes that are signed."""
    lines = (
        method.upper(),
        canonical_target(path),
        str(timestamp_ms),
        nonce,
        hashlib.sha256(body).hexdigest(),
    )
    return "\n".join(lines).encode("utf-8")


def sign_request(
    method: str,
    path: str,
    body: bytes,
    *,
    app_id: str,
    secret: str,
    algorithm: str = "hmac-sha256",
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The signing headers for one request; ``path`` may carry a ``?query``.

    ``secret`` is the shared secret, or for ``sm2-sm3`` our private key.

    ``now`` (unix seconds) and ``nonce`` default to the clock and a random value:
    every call, including every retry, gets a fresh pair.
    """
    alg = get_algorithm(algorithm)
    timestamp_ms = int((time.time() if now is None else now) * 1000)
    nonce = nonce or secrets.token_hex(16)
    signature = alg.sign(secret, canonical_string(method, path, timestamp_ms, nonce, body))
    return {
        HEADER_APP_ID: app_id,
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature,
        HEADER_ALGORITHM: alg.name,
    }


@dataclass(frozen=True)
class Signer:
    """One app's signing key: signs requests as ``app_id`` with ``algorithm``.

    ``secret`` is the shared secret, or for ``sm2-sm3`` our private key. An
    unknown algorithm is refused when the signer is made, not on first use.
    """

    app_id: str
    secret: str = field(repr=False)
    algorithm: str = "hmac-sha256"

    def __post_init__(self) -> None:
        get_algorithm(self.algorithm)

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """Fresh signing headers (new timestamp and nonce) for one request."""
        return sign_request(
            method, path, body, app_id=self.app_id, secret=self.secret, algorithm=self.algorithm
        )


def verify_signature(
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    lookup_secret: SecretLookup,
    allowed_algorithms: Collection[str],
    window_s: float = DEFAULT_WINDOW_S,
    now: float | None = None,
) -> SignedRequest:
    """Check a request's signing headers, all but nonce replay.

    Raises ``Unauthorized`` with ``code`` ``missing_header``, ``bad_header``,
    ``unsupported_algorithm``, ``stale_timestamp``, ``unknown_app`` or
    ``bad_signature``. Header names match case-insensitively.

    ``allowed_algorithms`` is required and pinned to the kind of key
    ``lookup_secret`` returns: otherwise an SM2 public key would also be accepted
    as an HMAC secret, and a public key is no secret.
    """
    by_name = {name.lower(): value for name, value in headers.items()}
    values = {name: by_name.get(name.lower(), "").strip() for name in SIGNING_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise Unauthorized(
            f"missing signing header(s): {', '.join(missing)}", code="missing_header"
        )

    app_id, nonce = values[HEADER_APP_ID], values[HEADER_NONCE]
    algorithm_name = values[HEADER_ALGORITHM]
    alg = ALGORITHMS.get(algorithm_name)
    if alg is None or algorithm_name not in allowed_algorithms:
        raise Unauthorized(
            f"{HEADER_ALGORITHM} {algorithm_name!r} is not accepted", code="unsupported_algorithm"
        )
    if len(nonce) > MAX_NONCE_LENGTH:
        raise Unauthorized(f"{HEADER_NONCE} longer than {MAX_NONCE_LENGTH}", code="bad_header")
    raw_timestamp = values[HEADER_TIMESTAMP]
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise Unauthorized(f"{HEADER_TIMESTAMP} is not unix milliseconds", code="bad_header")
    timestamp_ms = int(raw_timestamp)

    now_ms = (time.time() if now is None else now) * 1000
    if abs(now_ms - timestamp_ms) > window_s * 1000:
        raise Unauthorized(
            f"{HEADER_TIMESTAMP} outside the {window_s:g} s window", code="stale_timestamp"
        )

    secret = lookup_secret(app_id)
    if secret is None:
        raise Unauthorized(f"unknown app id {app_id!r}", code="unknown_app")

    message = canonical_string(method, path, timestamp_ms, nonce, body)
    if not alg.verify(secret, message, values[HEADER_SIGNATURE]):
        raise Unauthorized("signature does not match the request", code="bad_signature")
    return SignedRequest(app_id, nonce, timestamp_ms, alg.name)


def verify_request(
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    lookup_secret: SecretLookup,
    allowed_algorithms: Collection[str],
    window_s: float = DEFAULT_WINDOW_S,
    now: float | None = None,
    check_nonce: NonceCheck | None = None,
) -> str:
    """Verify a signed request and return its app id.

    As ``verify_signature``; then, if ``check_nonce`` is given, a nonce seen
    before raises ``Unauthorized`` with code ``replayed_nonce``. The nonce is
    only consumed by requests whose signature is right.
    """
    signed = verify_signature(
        method,
        path,
        body,
        headers,
        lookup_secret=lookup_secret,
        window_s=window_s,
        now=now,
        allowed_algorithms=allowed_algorithms,
    )
    if check_nonce is not None and not check_nonce(signed.app_id, signed.nonce):
        raise Unauthorized(f"nonce {signed.nonce!r} was already used", code="replayed_nonce")
    return signed.app_id


class MemoryNonceStore:
    """Nonces seen in the last ``ttl_s`` seconds, in memory: for one process (simulators, tests).

    ``ttl_s`` should cover the whole timestamp window (twice ``window_s``): a
    nonce forgotten while its timestamp is still accepted could be replayed.
    """

    def __init__(
        self, ttl_s: float = 2 * DEFAULT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def claim(self, app_id: str, nonce: str) -> bool:
        """True if the nonce is new for this app (and remember it), False on replay."""
        now = self._clock()
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]
        if (app_id, nonce) in self._seen:
            return False
        self._seen[(app_id, nonce)] = now + self._ttl_s
        return True
