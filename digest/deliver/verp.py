"""Addresses that say which delivery or subscriber a returning mail is about.

A bounce is sent to the message's envelope sender, so each message gets its own:
``bounces+<edition>-<subscriber>-<mac>@domain`` (VERP). A mailed unsubscribe request
goes to ``unsubscribe+<subscriber>-<mac>@domain``. The MAC (an HMAC with the signing
secret, in lower-case hex because mail systems may fold the case of a local part)
makes the tokens unforgeable: nobody can unsubscribe or bounce someone else by mail.
"""

from __future__ import annotations

import hashlib
import hmac
import re

MAC_LENGTH = 12


def _mac(secret: str, kind: str, ids: tuple[int, ...]) -> str:
    message = f"{kind}:{'-'.join(map(str, ids))}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:MAC_LENGTH]


def make_token(secret: str, kind: str, *ids: int) -> str:
    """``<id>-<id>-<mac>``."""
    return "-".join([*map(str, ids), _mac(secret, kind, ids)])


def read_token(secret: str, kind: str, token: str, count: int) -> tuple[int, ...] | None:
    """The ids in a token made by make_token, or None when it is not genuine."""
    parts = token.lower().split("-")
    if len(parts) != count + 1 or not all(p.isdigit() for p in parts[:-1]):
        return None
    ids = tuple(int(p) for p in parts[:-1])
    return ids if hmac.compare_digest(parts[-1], _mac(secret, kind, ids)) else None


def tagged(base: str, token: str) -> str:
    """``local@domain`` + token → ``local+token@domain``."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{token}@{domain}"


def tag_of(address: str, base: str) -> str | None:
    """The token in an address tagged from ``base``, if it is one."""
    local, _, domain = base.lower().rpartition("@")
    found = re.fullmatch(rf"{re.escape(local)}\+([0-9a-z-]+)@{re.escape(domain)}",
                         address.strip().strip("<>").lower())
    return found.group(1) if found else None
