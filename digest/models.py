"""The tables. Reads and writes of them live in digest/queries/, one module per family.

Times are stored in UTC and come back timezone-aware. Statuses are short strings
(the enums below), so the same schema works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; attach a timezone first")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint names Alembic can refer to."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class SubscriberStatus(StrEnum):
    """Where a subscriber stands. Only ``confirmed`` subscribers receive editions."""

    PENDING = "pending"  # asked to join, has not confirmed yet
    CONFIRMED = "confirmed"  # receives editions
    UNSUBSCRIBED = "unsubscribed"  # left; kept so a re-import cannot silently re-add them
    BOUNCED = "bounced"  # the address hard-bounced; never mailed again
    COMPLAINED = "complained"  # reported us as spam; never mailed again


class EditionStatus(StrEnum):
    """An edition's life. The period key makes each edition unique."""

    PREPARED = "prepared"  # composed and rendered, not enqueued (held for approval)
    SENDING = "sending"  # deliveries enqueued; some are still owed
    PAUSED = "paused"  # an operator stopped delivery; resume continues it
    SENT = "sent"  # every delivery is final; never sent again
    CANCELLED = "cancelled"  # stopped for good; what was sent stays sent


class DeliveryStatus(StrEnum):
    """One recipient's copy of one edition. The README lists every transition."""

    PENDING = "pending"  # owed; nobody has tried yet
    SENDING = "sending"  # claimed by a sender until lease_until; may or may not have left
    SENT = "sent"  # the SMTP server accepted it (final)
    DEFERRED = "deferred"  # a temporary failure; retried at next_attempt_at
    FAILED = "failed"  # a permanent failure; the reply says why (final)
    SUPPRESSED = "suppressed"  # not sent: the subscriber left or bounced meanwhile (final)


FINAL_DELIVERY_STATES = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED)


class Source(Base):
    """A feed digest gathers from, with what it remembers between fetches."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None]
    status: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    # Once a feed has told items apart by #fragment, fragments stay part of its articles'
    # identity, so a later run that lists one item of a page does not merge it with the page.
    keep_fragments: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    articles: Mapped[list[Article]] = relationship(back_populates="source")


class Article(Base):
    """One story, keyed by its canonical URL across every source and run."""

    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text, unique=True)
    link: Mapped[str | None] = mapped_column(Text)
    guid: Mapped[str | None] = mapped_column(Text)
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(Text)
    summary_html: Mapped[str] = mapped_column(Text, default="")
    summary_text: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    image_credit: Mapped[str | None] = mapped_column(Text)
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    # When the feed gave no date, published_at is the time digest first saw the item.
    published_at: Mapped[datetime] = mapped_column(index=True)
    published_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)

    source: Mapped[Source | None] = relationship(back_populates="articles")


class Subscriber(Base):
    """A person who receives (or received, or asked to receive) the digest."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address: the same person cannot exist twice under case variants.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    origin: Mapped[str] = mapped_column(String(16), default="cli")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    excluded_sections: Mapped[list[str]] = mapped_column(JSON, default=list)
    # How they joined and confirmed (method, times, addresses): the proof of consent.
    consent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)  # on their latest editions
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    # The last confirmation or "already subscribed" mail: the web form cannot make digest
    # mail one address more often than that allows.
    notice_sent_at: Mapped[datetime | None]


class Edition(Base):
    """One issue of the digest: what it holds, how it was rendered, and where it stands."""

    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str] = mapped_column(Text, default="")
    intro: Mapped[str] = mapped_column(Text, default="")
    # The bodies as rendered once, with the personal markers (nonce) still in them.
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    mjml: Mapped[str] = mapped_column(Text, default="")
    nonce: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    articles: Mapped[list[EditionArticle]] = relationship(
        back_populates="edition", order_by="EditionArticle.position", cascade="all, delete-orphan"
    )
    variants: Mapped[list[EditionVariant]] = relationship(cascade="all, delete-orphan")


class EditionVariant(Base):
    """An edition rendered without the sections some subscribers opted out of: one row per
    distinct set of preferences, rendered once and kept, like the edition itself."""

    __tablename__ = "edition_variants"
    __table_args__ = (UniqueConstraint("edition_id", "key", name="uq_edition_variants_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)  # the excluded sections, sorted, as JSON
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    articles: Mapped[int] = mapped_column(Integer)  # 0: nothing left to send this reader
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EditionArticle(Base):
    """An article's place in an edition."""

    __tablename__ = "edition_articles"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(Text)
    is_lead: Mapped[bool] = mapped_column(Boolean, default=False)

    edition: Mapped[Edition] = relationship(back_populates="articles")
    article: Mapped[Article] = relationship()


class Delivery(Base):
    """The ledger: one row per (edition, subscriber), created when the edition is enqueued."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        # Claims read one state at a time in id order; with id in the index that is a
        # range scan of the batch, however many rows of the edition are already sent.
        Index("ix_deliveries_claim", "edition_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    # NULL once the subscriber was erased: the count stays, the person goes.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    # What a later report said about a message the server had accepted: soft, hard.
    bounce: Mapped[str | None] = mapped_column(String(8))
    sent_by: Mapped[str | None] = mapped_column(String(64))  # host:pid of the sender


class RunOutcome(StrEnum):
    """How one scheduled firing ended."""

    BASELINE = "baseline"  # the daemon's first start: earlier firings were not its to run
    RUNNING = "running"  # started, not finished (a crash leaves this)
    SENT = "sent"  # the period's edition went out (complete)
    INCOMPLETE = "incomplete"  # sent, with deliveries still owed
    NOTHING_NEW = "nothing_new"  # no article that was not featured already
    ALREADY_SENT = "already_sent"  # the period's edition had gone out (e.g. a manual send)
    THIN = "thin"  # fewer than min_articles: skipped
    HELD = "held"  # prepared, not sent: a thin week on hold, or approval never came
    AWAITING_APPROVAL = "awaiting_approval"  # prepared; mailed to the editors
    MISSED = "missed"  # the daemon was down past misfire_grace: not sent, editors told
    FAILED = "failed"  # an error stopped it; the detail says which


class ScheduleRun(Base):
    """One firing of the schedule, keyed by the time it was scheduled for."""

    __tablename__ = "schedule_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(unique=True)
    period: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    edition_id: Mapped[int | None] = mapped_column(
        ForeignKey("editions.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class RateBudget(Base):
    """The send rate shared by every sender of a database: the next free slot, in seconds
    since the epoch. Senders reserve slots in small blocks, so adding workers never
    exceeds [smtp] rate_per_second."""

    __tablename__ = "rate_budget"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float)
