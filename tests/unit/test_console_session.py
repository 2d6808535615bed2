"""Console sessions: signed, expiring, bound to the key; form tokens bound to the session."""

from __future__ import annotations

import time

from gateway.console import session

SECRET = b"s" * 32
KEY_HASH = "ab" * 32


def test_a_session_names_its_client_and_carries_no_key() -> None:
    value = session.issue(SECRET, "ops-team", KEY_HASH, ttl_s=60)
    found = session.verify(SECRET, value)
    assert found is not None
    assert found.client == "ops-team"
    assert found.key_fingerprint == session.fingerprint(SECRET, KEY_HASH)
    assert KEY_HASH not in value
    assert time.time() < found.expires_at <= time.time() + 61


def test_a_forged_expired_or_foreign_cookie_is_refused() -> None:
    value = session.issue(SECRET, "ops-team", KEY_HASH, ttl_s=60)
    body, _, mac = value.partition(".")
    other = session.issue(SECRET, "someone-else", KEY_HASH, ttl_s=60).partition(".")[0]
    assert session.verify(SECRET, f"{other}.{mac}") is None  # body swapped
    assert session.verify(SECRET, f"{body}.{'0' * len(mac)}") is None
    assert session.verify(b"t" * 32, value) is None  # another server's secret
    assert session.verify(SECRET, "garbage") is None
    assert session.verify(SECRET, session.issue(SECRET, "ops-team", KEY_HASH, ttl_s=-1)) is None


def test_a_form_token_belongs_to_one_session() -> None:
    one = session.issue(SECRET, "ops-team", KEY_HASH, ttl_s=60)
    two = session.issue(SECRET, "ops-team", KEY_HASH, ttl_s=60)
    token = session.csrf_token(SECRET, one)
    assert session.csrf_ok(SECRET, one, token)
    assert not session.csrf_ok(SECRET, two, token)
    assert not session.csrf_ok(SECRET, one, "")
