"""Reads and writes of the deliveries table: the ledger of who is owed which edition."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ..db import Database
from ..deliver.run import DEFAULT_LEASE, Job, Result
from ..models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
)
from . import editions

OWED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED)


def enqueue(session: Session, edition_id: int, now: datetime) -> int:
    """Create a pending delivery for every confirmed subscriber not yet in the ledger.

    One INSERT … SELECT: nothing is loaded into Python, whatever the list's size.
    """
    already = select(Delivery.id).where(
        Delivery.edition_id == edition_id, Delivery.subscriber_id == Subscriber.id
    ).exists()
    source = select(
        literal(edition_id), Subscriber.id, literal(DeliveryStatus.PENDING.value), literal(0),
        literal(now, Delivery.created_at.type), literal(now, Delivery.updated_at.type),
    ).where(Subscriber.status == SubscriberStatus.CONFIRMED, ~already)
    result = session.execute(
        insert(Delivery).from_select(
            ["edition_id", "subscriber_id", "status", "attempts", "created_at", "updated_at"],
            source,
        )
    )
    return _rowcount(result)


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def counts(session: Session, edition_id: int) -> dict[str, int]:
    """How many deliveries of an edition are in each state."""
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.edition_id == edition_id)
        .group_by(Delivery.status)
    )
    found = {str(status): int(n) for status, n in rows}
    return {state.value: found.get(state.value, 0) for state in DeliveryStatus}


def _due_states(edition_id: int, now: datetime) -> list[ColumnElement[bool]]:
    """What makes a delivery claimable, one condition per state."""
    return [
        and_(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.PENDING),
        and_(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.DEFERRED,
             Delivery.next_attempt_at <= now),
        # A sender that died leaves its claim behind; the lease says when to take it over.
        and_(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENDING,
             Delivery.lease_until < now),
    ]


def _due_ids(session: Session, edition_id: int, now: datetime, limit: int,
             lock: bool = False) -> list[int]:
    """Up to ``limit`` claimable delivery ids, lowest first within each state.

    One query per state, each a range scan of the (edition_id, status, id) index: an OR
    of the states ordered by id made SQLite read every row of the edition per claim."""
    ids: list[int] = []
    for condition in _due_states(edition_id, now):
        pick = select(Delivery.id).where(condition).order_by(Delivery.id).limit(limit - len(ids))
        if lock:
            pick = pick.with_for_update(skip_locked=True)
        ids.extend(session.scalars(pick))
        if len(ids) >= limit:
            break
    return ids


def claim(
    session: Session,
    edition_id: int,
    owner: str,
    limit: int,
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> list[Job]:
    """Take up to ``limit`` due deliveries for ``owner``; suppress those no longer wanted.
    Nothing is taken while the edition is not being sent (paused, cancelled)."""
    status = session.scalar(select(Edition.status).where(Edition.id == edition_id))
    if status != EditionStatus.SENDING:
        return []
    while True:
        ids = _due_ids(session, edition_id, now, limit,
                       lock=session.get_bind().dialect.name == "postgresql")
        if not ids:
            return []
        rows = session.execute(
            select(Delivery.id, Delivery.attempts, Subscriber.id, Subscriber.email,
                   Subscriber.email_key, Subscriber.name, Subscriber.status,
                   Subscriber.excluded_sections)
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.id.in_(ids))
            .order_by(Delivery.id)
        ).all()
        jobs, unwanted = [], []
        for delivery_id, attempts, sub_id, email, key, name, status, excluded in rows:
            if sub_id is None or status != SubscriberStatus.CONFIRMED:
                unwanted.append(delivery_id)
            else:
                jobs.append(Job(delivery_id, sub_id, email, key, name, attempts + 1,
                                tuple(excluded or ())))
        if unwanted:
            session.execute(
                update(Delivery).where(Delivery.id.in_(unwanted)).values(
                    status=DeliveryStatus.SUPPRESSED, updated_at=now, claimed_by=None,
                    lease_until=None, last_reply="not sent: the subscriber is no longer confirmed",
                )
            )
        if jobs:
            session.execute(
                update(Delivery).where(Delivery.id.in_([j.delivery_id for j in jobs])).values(
                    status=DeliveryStatus.SENDING, attempts=Delivery.attempts + 1,
                    claimed_by=owner, lease_until=now + lease, updated_at=now,
                )
            )
            return jobs


_DELIVERIES = Table("deliveries", Delivery.metadata)  # the mapped table, for executemany
# Only a row this sender still holds is written: a result that arrives after the row was
# taken over (its lease ran out) or closed (the edition was cancelled) changes nothing.
_RECORD = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"), _DELIVERIES.c.claimed_by == bindparam("b_by"),
           _DELIVERIES.c.status == DeliveryStatus.SENDING.value)
    .values(status=bindparam("b_status"), last_reply=bindparam("b_reply"),
            updated_at=bindparam("b_now"), claimed_by=None, lease_until=None,
            next_attempt_at=bindparam("b_retry"), sent_at=bindparam("b_sent"),
            sent_by=bindparam("b_by"))
)


def record(session: Session, results: Sequence[Result], now: datetime,
           owner: str | None = None) -> None:
    """Store the outcome of sent jobs in one statement (executemany); a hard bounce also
    marks the subscriber bounced."""
    if not results:
        return
    session.connection().execute(_RECORD, [
        {"b_id": r.delivery_id, "b_status": r.status.value, "b_reply": r.reply, "b_now": now,
         "b_retry": r.retry_at, "b_sent": now if r.status == DeliveryStatus.SENT else None,
         "b_by": owner}
        for r in results
    ])
    bounced = [r.subscriber_id for r in results if r.bounced]
    if bounced:
        session.execute(
            update(Subscriber).where(Subscriber.id.in_(bounced)).values(
                status=SubscriberStatus.BOUNCED, bounce_count=Subscriber.bounce_count + 1
            )
        )


def release(session: Session, delivery_ids: Sequence[int], owner: str, now: datetime) -> None:
    """Give back claimed deliveries that were not sent: pending again, the attempt undone."""
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.claimed_by == owner,
               Delivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.PENDING, attempts=Delivery.attempts - 1,
                claimed_by=None, lease_until=None, updated_at=now)
    )


def renew(session: Session, edition_id: int, owner: str, now: datetime,
          lease: timedelta = DEFAULT_LEASE) -> int:
    """Extend the lease of every delivery ``owner`` still holds."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.claimed_by == owner,
               Delivery.status == DeliveryStatus.SENDING)
        .values(lease_until=now + lease)
    )
    return _rowcount(result)


def release_claims(session: Session, edition_id: int, now: datetime) -> int:
    """Make claims of dead senders due at once (only when no other sender can be alive)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENDING)
        .values(lease_until=now - timedelta(seconds=1))
    )
    return _rowcount(result)


def next_retry(session: Session, edition_id: int) -> datetime | None:
    """When the earliest owed delivery becomes due again."""
    deferred = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.DEFERRED
        )
    )
    leased = session.scalar(
        select(func.min(Delivery.lease_until)).where(
            Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENDING
        )
    )
    times = [t for t in (deferred, leased) if t is not None]
    return min(times) if times else None


def has_due(session: Session, edition_id: int, now: datetime) -> bool:
    """Whether any delivery of the edition can be claimed now."""
    return bool(_due_ids(session, edition_id, now, 1))


def sending_editions(session: Session) -> list[int]:
    """Editions whose deliveries are being sent (workers join these)."""
    return list(session.scalars(
        select(Edition.id).where(Edition.status == EditionStatus.SENDING).order_by(Edition.id)))


def owed(session: Session, edition_id: int) -> int:
    """How many deliveries of the edition are not final yet."""
    return int(session.scalar(
        select(func.count()).where(Delivery.edition_id == edition_id, Delivery.status.in_(OWED))
    ) or 0)


class SqlLedger:
    """The Ledger of deliver.run on the database, for one edition and one sender."""

    def __init__(self, db: Database, edition_id: int, owner: str,
                 lease: timedelta = DEFAULT_LEASE) -> None:
        self.db = db
        self.edition_id = edition_id
        self.owner = owner
        self.lease = lease

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Mark up to ``limit`` due deliveries as sending and return them."""
        with self.db.session() as session:
            return claim(session, self.edition_id, self.owner, limit, now, self.lease)

    def record(self, results: Sequence[Result], now: datetime) -> None:
        """Store a batch of results in one transaction."""
        with self.db.session() as session:
            record(session, results, now, self.owner)

    def release(self, jobs: Sequence[Job], now: datetime) -> None:
        """Give back jobs that were claimed but not sent."""
        with self.db.session() as session:
            release(session, [j.delivery_id for j in jobs], self.owner, now)

    def renew(self, now: datetime) -> None:
        """Keep the lease on what this sender still holds."""
        with self.db.session() as session:
            renew(session, self.edition_id, self.owner, now, self.lease)

    def next_retry(self) -> datetime | None:
        """When the earliest deferred (or abandoned) delivery is due."""
        with self.db.reader() as session:
            return next_retry(session, self.edition_id)

    def owed(self) -> int:
        """How many deliveries of the edition are not final."""
        with self.db.reader() as session:
            return owed(session, self.edition_id)

    def active(self) -> bool:
        """Whether the edition is being sent."""
        with self.db.reader() as session:
            return session.scalar(select(Edition.status).where(
                Edition.id == self.edition_id)) == EditionStatus.SENDING

    def finish_if_complete(self, now: datetime) -> bool:
        """Mark the edition sent once nothing is owed; only a sending edition becomes sent
        (a cancelled or paused one stays what the operator made it)."""
        with self.db.session() as session:
            if owed(session, self.edition_id):
                return False
            edition = session.get_one(Edition, self.edition_id)
            if edition.status == EditionStatus.SENDING:
                editions.set_status(session, edition, EditionStatus.SENT, now)
            return edition.status == EditionStatus.SENT


def suppress_owed(session: Session, edition_id: int, reason: str, now: datetime) -> int:
    """Close every delivery of an edition that is still owed (a cancelled edition). Rows a
    live sender holds are left to it: their messages may be on the wire, and it records
    what the server said."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id,
               or_(Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.DEFERRED)),
                   and_(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_until < now)))
        .values(status=DeliveryStatus.SUPPRESSED, last_reply=reason, updated_at=now,
                claimed_by=None, lease_until=None)
    )
    return _rowcount(result)


def reopen_failed(session: Session, edition_id: int, now: datetime) -> int:
    """Make an edition's failed and deferred deliveries pending again; subscribers whose
    address bounced on this very edition are confirmed again (an operator retrying has
    decided the refusal was not theirs)."""
    failed = select(Delivery.subscriber_id).where(
        Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.FAILED)
    session.execute(
        update(Subscriber)
        .where(Subscriber.id.in_(failed), Subscriber.status == SubscriberStatus.BOUNCED)
        .values(status=SubscriberStatus.CONFIRMED,
                bounce_count=func.max(Subscriber.bounce_count - 1, 0)
                if session.get_bind().dialect.name == "sqlite"
                else func.greatest(Subscriber.bounce_count - 1, 0))
    )
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id,
               Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.DEFERRED)))
        .values(status=DeliveryStatus.PENDING, next_attempt_at=None, updated_at=now)
    )
    return _rowcount(result)


def failures(session: Session, edition_id: int, limit: int = 50) -> list[tuple[str, str]]:
    """(address, last reply) of an edition's failed and deferred deliveries."""
    rows = session.execute(
        select(Subscriber.email, Delivery.last_reply, Delivery.status)
        .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.edition_id == edition_id,
               Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.DEFERRED)))
        .order_by(Delivery.id).limit(limit)
    )
    return [(email or "(erased)", f"{status}: {reply or ''}") for email, reply, status in rows]
