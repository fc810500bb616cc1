"""Signed tokens for the links in emails: unsubscribe, preferences, confirm.

A token names a purpose (the itsdangerous salt), the subscriber's id and a short
hash of their address, so it cannot be used for another purpose, and it stops
working if the row is erased and the id is reused by someone else. Unsubscribe
and preferences tokens do not expire (a link in a two-year-old mail must still
let its reader leave); confirmation tokens do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from itsdangerous import Signer as _Signer

from .errors import DigestError

CONFIRM_MAX_AGE = 7 * 24 * 3600


class Purpose(StrEnum):
    """What a token allows."""

    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"


MAX_AGE = {Purpose.CONFIRM: CONFIRM_MAX_AGE}


class TokenError(DigestError):
    """A token is tampered, expired or meant for something else."""


@dataclass(frozen=True)
class TokenClaims:
    """Whom a valid token is about."""

    subscriber_id: int
    address_hash: str


def address_hash(email_key: str) -> str:
    """A short, stable fingerprint of a lower-cased address."""
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()[:12]


class Signer:
    """Makes and checks tokens with one secret.

    A token is ``<subscriber id>.<address fingerprint>.<signature>`` (itsdangerous, HMAC
    with a salt per purpose); a confirmation token also carries its timestamp. Compact
    and without JSON on purpose: every message of an edition carries two of them.
    """

    def __init__(self, secret: str) -> None:
        self._signers: dict[Purpose, _Signer] = {
            purpose: (TimestampSigner if purpose in MAX_AGE else _Signer)(
                secret, salt=f"digest.{purpose.value}")
            for purpose in Purpose
        }

    def make(self, purpose: Purpose, subscriber_id: int, email_key: str) -> str:
        """A token for ``purpose`` about this subscriber."""
        value = f"{subscriber_id}.{address_hash(email_key)}"
        return self._signers[purpose].sign(value).decode("ascii")

    def read(self, purpose: Purpose, token: str) -> TokenClaims:
        """The claims of a valid token; TokenError when it is not valid for ``purpose``."""
        signer = self._signers[purpose]
        try:
            if isinstance(signer, TimestampSigner):
                value = signer.unsign(token, max_age=MAX_AGE[purpose])
            else:
                value = signer.unsign(token)
        except SignatureExpired:
            raise TokenError("this link has expired", hint="ask for a new one") from None
        except (BadSignature, UnicodeError):
            raise TokenError("this link is not valid") from None
        sub_id, _, fingerprint = value.decode("ascii", "replace").partition(".")
        if not sub_id.isdigit() or len(fingerprint) != 12:
            raise TokenError("this link is not valid")
        return TokenClaims(subscriber_id=int(sub_id), address_hash=fingerprint)
