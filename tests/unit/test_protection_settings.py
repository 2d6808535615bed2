"""Production refuses to start without its own data, index and audit keys."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from adapters.registry import PLATFORMS
from gateway.protect import keyring_of
from gateway.settings import SANDBOX_DATA_KEYS, Settings

#: A secret of its own for every secret of every platform (placeholders are refused).
SECRETS: dict[str, Any] = {
    platform.name: {
        name: f"{platform.name}-{name}"
        for name, field in platform.settings_model.model_fields.items()
        if field.annotation is SecretStr
    }
    for platform in PLATFORMS
}
OWN_KEYS = {
    "keys": {"2026-11": "a1" * 16},
    "index_key": "b2" * 32,
    "audit_private_key": "28183740b9f43d0740e893096bbb477e721962bf35b85c6ef48a197c6ad03376",
    "audit_public_key": "041c38e7bb8aca4fb1ca6e0628bc2b73169417c9fdec7dbf49959e7f0345c476fd"
    "ee423bc09feb7a69f609e54fb0670cb4bcdebd7860d874aed126b9fd678c05e2",
}


def test_production_without_keys_does_not_start() -> None:
    with pytest.raises(ValidationError, match=r"protection\.keys.*protection\.index_key"):
        Settings(environment="production", **SECRETS)


def test_production_with_the_sandbox_keys_does_not_start() -> None:
    keys = {**OWN_KEYS, "keys": SANDBOX_DATA_KEYS}
    with pytest.raises(ValidationError, match=r"own keys: protection\.keys"):
        Settings(environment="production", protection=keys, **SECRETS)


def test_production_with_its_own_keys_starts_under_its_current_key() -> None:
    settings = Settings(environment="production", protection=OWN_KEYS, **SECRETS)

    ring = keyring_of(settings.protection)

    assert ring.current_key_id == "2026-11" and ring.algorithm == "sm4-gcm"


def test_a_current_key_id_that_names_no_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="current_key_id"):
        Settings(protection={"keys": {"a": "a1" * 16}, "current_key_id": "b"})


def test_the_sandbox_gets_development_keys() -> None:
    settings = Settings()

    assert keyring_of(settings.protection).encrypt(b"x", "c").startswith("ywtb1:sm4-gcm:sandbox-1:")
    assert settings.protection.audit_public_key
