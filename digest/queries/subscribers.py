"""Reads and writes of the subscribers table."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import Subscriber, SubscriberStatus


def get_by_key(session: Session, email_key: str) -> Subscriber | None:
    """The subscriber with this lower-cased address, if any."""
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))


def get_by_id(session: Session, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, if any."""
    return session.get(Subscriber, subscriber_id)


def existing_keys(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """For the given lower-cased addresses, the status of those already stored."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = session.execute(
        select(Subscriber.email_key, Subscriber.status).where(Subscriber.email_key.in_(wanted))
    )
    return {str(key): str(status) for key, status in rows}


def insert_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert subscribers, silently skipping addresses that exist; returns the new ids."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(Subscriber).on_conflict_do_nothing(index_elements=["email_key"])
    result = session.execute(statement.returning(Subscriber.id), list(rows))
    new_ids: list[int] = list(result.scalars().all())
    return new_ids


def by_ids(session: Session, ids: Iterable[int]) -> Sequence[Subscriber]:
    """The subscribers with these ids."""
    return session.scalars(select(Subscriber).where(Subscriber.id.in_(list(ids)))).all()


def iter_subscribers(
    session: Session, status: SubscriberStatus | None = None, batch: int = 1000
) -> Iterator[Subscriber]:
    """Every subscriber (optionally of one status) in id order, streamed in batches."""
    last = 0
    while True:
        query = select(Subscriber).where(Subscriber.id > last).order_by(Subscriber.id).limit(batch)
        if status is not None:
            query = query.where(Subscriber.status == status)
        rows = session.scalars(query).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id
        session.expunge_all()


def first_confirmed(session: Session) -> Subscriber | None:
    """The oldest confirmed subscriber (the preview is addressed to them)."""
    return session.scalar(
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.CONFIRMED)
        .order_by(Subscriber.id)
        .limit(1)
    )


def delete_subscriber(session: Session, subscriber_id: int) -> None:
    """Erase a subscriber; their delivery rows stay, anonymous (subscriber_id set NULL)."""
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def set_status(
    session: Session, subscriber: Subscriber, status: SubscriberStatus, now: datetime
) -> None:
    """Move a subscriber to another status, stamping the matching time."""
    subscriber.status = status
    if status == SubscriberStatus.CONFIRMED:
        subscriber.confirmed_at = now
    elif status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = now
