"""What an operator does to stored editions: list, show, pause, resume, cancel, retry,
approve. Each checks the edition's state and says plainly what it cannot do.

The transitions (see the README): prepared → sending (approve); sending → paused
(pause) → sending (resume); prepared, sending, paused → cancelled (cancel: what was
sent stays sent, the rest is suppressed); sent → sending (retry: the failed and
deferred deliveries are owed again). Resume, retry and approve are followed by a
delivery run (editions.deliver_edition).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from .app import Context
from .errors import EditionError
from .models import Edition, EditionStatus
from .queries import deliveries as delivery_queries
from .queries import editions as edition_queries


@dataclass(frozen=True)
class EditionSummary:
    """An edition as `digest editions list` shows it."""

    id: int
    period: str
    status: str
    subject: str
    created_at: datetime
    enqueued_at: datetime | None
    completed_at: datetime | None
    counts: dict[str, int]


@dataclass(frozen=True)
class EditionDetail(EditionSummary):
    """An edition as `digest editions show` shows it."""

    articles: list[tuple[str, str, bool]] = field(default_factory=list)  # title, section, lead
    failures: list[tuple[str, str]] = field(default_factory=list)
    variants: int = 0


def _summary(session: Session, row: Edition) -> EditionSummary:
    return EditionSummary(row.id, row.period, row.status, row.subject, row.created_at,
                          row.enqueued_at, row.completed_at,
                          delivery_queries.counts(session, row.id))


def list_editions(ctx: Context, limit: int = 50) -> list[EditionSummary]:
    """The newest editions with their delivery counts."""
    with ctx.db.reader() as session:
        return [_summary(session, row) for row in edition_queries.list_editions(session, limit)]


def _get(session: Session, edition_id: int) -> Edition:
    row = edition_queries.get(session, edition_id)
    if row is None:
        raise EditionError(f"there is no edition {edition_id}",
                           hint="`digest editions list` shows them")
    return row


def show(ctx: Context, edition_id: int) -> EditionDetail:
    """One edition: counts, articles, failures."""
    with ctx.db.reader() as session:
        row = _get(session, edition_id)
        summary = _summary(session, row)
        plan = edition_queries.stored_plan(session, row)
        articles = ([(plan.lead.title, plan.lead_section or "", True)] if plan.lead else [])
        articles += [(a.title, s.name, False) for s in plan.sections for a in s.articles]
        return EditionDetail(
            **summary.__dict__, articles=articles,
            failures=delivery_queries.failures(session, row.id),
            variants=len(row.variants),
        )


def _move(ctx: Context, edition_id: int, allowed: tuple[EditionStatus, ...],
          to: EditionStatus, verb: str) -> Edition:
    with ctx.db.session() as session:
        row = _get(session, edition_id)
        if row.status not in allowed:
            raise EditionError(
                f"edition {edition_id} ({row.period}) is {row.status}; only an edition that "
                f"is {' or '.join(allowed)} can be {verb}")
        edition_queries.set_status(session, row, to, ctx.now())
        if to == EditionStatus.SENDING:
            delivery_queries.enqueue(session, row.id, ctx.now())
        if to == EditionStatus.CANCELLED:
            delivery_queries.suppress_owed(session, row.id, "not sent: the edition was cancelled",
                                           ctx.now())
        return row


def pause(ctx: Context, edition_id: int) -> Edition:
    """Stop delivery after the batch in flight; `resume` continues it."""
    return _move(ctx, edition_id, (EditionStatus.SENDING,), EditionStatus.PAUSED, "paused")


def resume(ctx: Context, edition_id: int) -> Edition:
    """Let a paused edition be delivered again."""
    return _move(ctx, edition_id, (EditionStatus.PAUSED,), EditionStatus.SENDING, "resumed")


def approve(ctx: Context, edition_id: int) -> Edition:
    """Send a prepared (held) edition."""
    return _move(ctx, edition_id, (EditionStatus.PREPARED,), EditionStatus.SENDING, "approved")


def cancel(ctx: Context, edition_id: int) -> Edition:
    """Stop an edition for good: what was sent stays sent, what is owed is not sent."""
    return _move(ctx, edition_id,
                 (EditionStatus.PREPARED, EditionStatus.SENDING, EditionStatus.PAUSED),
                 EditionStatus.CANCELLED, "cancelled")


def retry(ctx: Context, edition_id: int) -> int:
    """Owe the failed and deferred deliveries of an edition again; returns how many."""
    with ctx.db.session() as session:
        row = _get(session, edition_id)
        if row.status not in (EditionStatus.SENT, EditionStatus.SENDING):
            raise EditionError(f"edition {edition_id} ({row.period}) is {row.status}; only a "
                               "sent or sending edition can be retried")
        reopened = delivery_queries.reopen_failed(session, row.id, ctx.now())
        if reopened and row.status == EditionStatus.SENT:
            row.status, row.completed_at = EditionStatus.SENDING, None
        return reopened
