"""Signed link tokens: bound to purpose and subscriber, tamper- and expiry-proof."""

from __future__ import annotations

import time

import pytest

from digest.tokens import Purpose, Signer, TokenError, address_hash

SIGNER = Signer("a-secret-that-is-long-enough-1234")


def test_round_trip() -> None:
    token = SIGNER.make(Purpose.UNSUBSCRIBE, 42, "ann@example.org")
    claims = SIGNER.read(Purpose.UNSUBSCRIBE, token)
    assert claims.subscriber_id == 42
    assert claims.address_hash == address_hash("ann@example.org")


def test_token_is_url_safe() -> None:
    token = SIGNER.make(Purpose.UNSUBSCRIBE, 42, "ann@example.org")
    assert all(c.isalnum() or c in "-_." for c in token)


def test_wrong_purpose_is_refused() -> None:
    token = SIGNER.make(Purpose.CONFIRM, 42, "ann@example.org")
    with pytest.raises(TokenError):
        SIGNER.read(Purpose.UNSUBSCRIBE, token)


def test_tampered_token_is_refused() -> None:
    token = SIGNER.make(Purpose.UNSUBSCRIBE, 42, "ann@example.org")
    forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(TokenError):
        SIGNER.read(Purpose.UNSUBSCRIBE, forged)
    with pytest.raises(TokenError):
        SIGNER.read(Purpose.UNSUBSCRIBE, "garbage")


def test_other_secret_is_refused() -> None:
    token = Signer("another-secret-that-is-long-enough").make(Purpose.UNSUBSCRIBE, 1, "a@b.c")
    with pytest.raises(TokenError):
        SIGNER.read(Purpose.UNSUBSCRIBE, token)


def test_confirm_tokens_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    token = SIGNER.make(Purpose.CONFIRM, 1, "a@b.c")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 8 * 24 * 3600)
    with pytest.raises(TokenError, match="expired"):
        SIGNER.read(Purpose.CONFIRM, token)
    # Unsubscribe links keep working: a reader may leave years later.
    old = SIGNER.make(Purpose.UNSUBSCRIBE, 1, "a@b.c")
    assert SIGNER.read(Purpose.UNSUBSCRIBE, old).subscriber_id == 1
