"""The send rate shared by every sender of one database (the rate_budget table)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import RateBudget

NAME = "smtp"


def reserve(session: Session, count: int, per_second: float, now: float) -> float:
    """Reserve ``count`` send slots; returns when the first may be used (epoch seconds).

    The row is locked for the transaction (FOR UPDATE on PostgreSQL; SQLite write
    transactions are exclusive), so two senders never get the same slots.
    """
    query = select(RateBudget).where(RateBudget.name == NAME)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        row = RateBudget(name=NAME, next_at=now)
        session.add(row)
    start = max(row.next_at, now)
    row.next_at = start + count / per_second
    return start
