"""Personal data at rest: field encryption with key ids, and blind indexes.

Personal fields (a person's credential number, names, phone numbers,
addresses) are encrypted one value at a time, SM4-GCM by default (GB/T 32907)
or AES-256-GCM, as text tokens::

    ywtb1:<algorithm>:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>

The associated data binds a token to its column (``applications.request``),
so a token copied into another column does not decrypt. The key id makes
rotation possible without downtime: add a key, make it current (new writes use
it, old tokens still decrypt with theirs), run ``ywtb keys rotate`` to
re-encrypt every row under it, then retire the old key.

Lookups and uniqueness on an encrypted value use its blind index,
HMAC-SM3 under a key of its own (``blind_index``), never the ciphertext.

The key ring is installed once per process by ``bootstrap`` (``install``);
the column types (``EncryptedText``, ``EncryptedJSON``) use it. A value that
is not a token is read as clear text: rows written before encryption was
introduced stay readable until ``ywtb keys rotate`` encrypts them.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import Dialect, Text, TypeDecorator

from gateway.settings import ProtectionSettings

PREFIX = "ywtb1"
NONCE_BYTES = 12
TAG_BYTES = 16

#: Key length of each algorithm, in bytes.
KEY_BYTES = {"sm4-gcm": 16, "aes-256-gcm": 32}


class TokenError(ValueError):
    """A token that cannot be decrypted: unknown key id, wrong column, or tampered."""


@functools.lru_cache(maxsize=64)
def _algorithm(name: str, key: bytes) -> algorithms.SM4 | algorithms.AES:
    """The cipher of ``name`` under ``key`` (kept: rows are decrypted by the thousand)."""
    if name == "sm4-gcm":
        return algorithms.SM4(key)
    if name == "aes-256-gcm":
        return algorithms.AES(key)
    raise ValueError(f"unknown cipher {name!r} (known: {', '.join(KEY_BYTES)})")


def sm3_hex(data: bytes) -> str:
    """SM3 (GB/T 32905) digest as lower-case hex."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


@dataclass(frozen=True)
class KeyRing:
    """Data keys by id, the current one, the cipher of new tokens, and the index key."""

    keys: Mapping[str, bytes]
    current_key_id: str
    algorithm: str
    index_key: bytes

    def __post_init__(self) -> None:
        if self.current_key_id not in self.keys:
            raise ValueError(f"current key id {self.current_key_id!r} is not among the keys")
        for kid in self.keys:
            if not kid or ":" in kid:
                raise ValueError(f"key id {kid!r}: must be non-empty and without ':'")
        wanted = KEY_BYTES.get(self.algorithm)
        if wanted is None:
            raise ValueError(f"unknown cipher {self.algorithm!r} (known: {', '.join(KEY_BYTES)})")
        if len(self.keys[self.current_key_id]) != wanted:
            raise ValueError(f"{self.algorithm} needs a {8 * wanted}-bit key")
        if len(self.index_key) < 16:
            raise ValueError("the blind index key needs at least 128 bits")

    @classmethod
    def from_hex(
        cls, keys: Mapping[str, str], current_key_id: str, algorithm: str, index_key: str
    ) -> KeyRing:
        try:
            raw = {kid: bytes.fromhex(value.strip()) for kid, value in keys.items()}
            index = bytes.fromhex(index_key.strip())
        except ValueError as exc:
            raise ValueError(f"protection keys must be hex: {exc}") from None
        return cls(raw, current_key_id, algorithm, index)

    def encrypt(self, plaintext: bytes, context: str) -> str:
        """A token of ``plaintext`` for the column ``context``, under the current key."""
        kid, name = self.current_key_id, self.algorithm
        nonce = os.urandom(NONCE_BYTES)
        encryptor = Cipher(_algorithm(name, self.keys[kid]), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(_aad(context, name, kid))
        sealed = encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag
        return f"{PREFIX}:{name}:{kid}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, token: str, context: str) -> bytes:
        """The plaintext of a token; ``TokenError`` if it cannot be opened (never a guess)."""
        try:
            prefix, name, kid, payload = token.split(":", 3)
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            raise TokenError("not a ywtb1 token") from None
        if prefix != PREFIX or name not in KEY_BYTES:
            raise TokenError("not a ywtb1 token")
        key = self.keys.get(kid)
        if key is None:
            raise TokenError(f"unknown key id {kid!r}: keep retired keys until `ywtb keys rotate`")
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise TokenError("token too short")
        nonce, sealed, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
        decryptor = Cipher(_algorithm(name, key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(_aad(context, name, kid))
        try:
            return decryptor.update(sealed) + decryptor.finalize()
        except InvalidTag:
            raise TokenError(f"token of {context} fails authentication (tampered?)") from None

    def is_current(self, token: str) -> bool:
        """Whether a stored value is a token under the current key and cipher."""
        return is_token(token) and token.startswith(
            f"{PREFIX}:{self.algorithm}:{self.current_key_id}:"
        )

    def blind_index(self, value: str, purpose: str = "credential") -> str:
        """HMAC-SM3 of ``value`` under the index key: equal values, equal index; no way back."""
        mac = hmac.HMAC(self.index_key, hashes.SM3())
        mac.update(f"{purpose}\x00{value}".encode())
        return mac.finalize().hex()


def _aad(context: str, algorithm: str, kid: str) -> bytes:
    return f"{PREFIX}|{context}|{algorithm}|{kid}".encode()


def is_token(value: str) -> bool:
    return value.startswith(f"{PREFIX}:")


_ring: KeyRing | None = None


def install(ring: KeyRing) -> None:
    """Make ``ring`` the key ring of this process (``bootstrap`` does this)."""
    global _ring
    _ring = ring


def keyring() -> KeyRing:
    if _ring is None:
        raise RuntimeError("no key ring installed: bootstrap() installs it from settings")
    return _ring


def blind_index(value: str, purpose: str = "credential") -> str:
    return keyring().blind_index(value, purpose)


class EncryptedText(TypeDecorator[str]):
    """A text column stored encrypted; ``context`` (table.column) is bound into each token."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring().encrypt(value.encode("utf-8"), self.context)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not is_token(value):
            return value
        return keyring().decrypt(value, self.context).decode("utf-8")


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once, not per call


def json_bytes(value: Any) -> bytes:
    """The one JSON form of event data: stored (encrypted) in the outbox, and published as is."""
    return _JSON.encode(value).encode("utf-8")


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored encrypted as a whole (SQL NULL for None)."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring().encrypt(json_bytes(value), self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and is_token(value):
            return json.loads(keyring().decrypt(value, self.context))
        return json.loads(value) if isinstance(value, str) else value


class EncryptedJSONBytes(EncryptedJSON):
    """An ``EncryptedJSON`` column read as its JSON text, decrypted but not parsed (the relay
    publishes it as is): ``type_coerce(column, EncryptedJSONBytes(context))``."""

    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if is_token(value):
            return keyring().decrypt(value, self.context)
        return value.encode("utf-8")  # stored before encryption at rest


def keyring_of(settings: ProtectionSettings) -> KeyRing:
    """The key ring the settings describe (``Settings`` has filled in sandbox keys)."""
    assert settings.current_key_id is not None  # the Settings validator sets it
    return KeyRing.from_hex(
        {kid: key.get_secret_value() for kid, key in settings.keys.items()},
        settings.current_key_id,
        settings.algorithm,
        settings.index_key.get_secret_value(),
    )
