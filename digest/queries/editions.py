"""Reads and writes of the editions and edition_articles tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import domain
from ..models import Edition, EditionArticle, EditionStatus


def get_by_period(session: Session, key: str) -> Edition | None:
    """The edition of a period, if one was prepared."""
    return session.scalar(select(Edition).where(Edition.period == key))


def get(session: Session, edition_id: int) -> Edition | None:
    """An edition by id."""
    return session.get(Edition, edition_id)


def list_editions(session: Session, limit: int = 50) -> Sequence[Edition]:
    """The newest editions first."""
    return session.scalars(select(Edition).order_by(Edition.id.desc()).limit(limit)).all()


def create_edition(
    session: Session,
    plan: domain.Edition,
    rendered: domain.RenderedEdition,
    *,
    intro: str = "",
    now: datetime,
    status: EditionStatus = EditionStatus.PREPARED,
) -> Edition:
    """Store a composed and rendered edition with the place of each article in it."""
    row = Edition(
        period=plan.period.key,
        status=status,
        window_start=plan.period.start,
        window_end=plan.period.end,
        subject=rendered.subject,
        preheader=rendered.preheader,
        intro=intro,
        html=rendered.html,
        text=rendered.text,
        mjml=rendered.mjml,
        nonce=rendered.nonce,
        created_at=now,
    )
    section_of = {a.id: s.name for s in plan.sections for a in s.articles}
    for position, article in enumerate(plan.articles):
        row.articles.append(EditionArticle(
            article_id=article.id,
            position=position,
            section=section_of.get(article.id, ""),
            is_lead=plan.lead is not None and article.id == plan.lead.id,
        ))
    session.add(row)
    session.flush()
    return row


def set_status(session: Session, edition: Edition, status: EditionStatus, now: datetime) -> None:
    """Move an edition on; enqueuing and completion are stamped."""
    edition.status = status
    if status == EditionStatus.SENDING and edition.enqueued_at is None:
        edition.enqueued_at = now
    if status == EditionStatus.SENT:
        edition.completed_at = now


def last_sent(session: Session) -> Edition | None:
    """The most recently completed edition."""
    return session.scalar(
        select(Edition).where(Edition.status == EditionStatus.SENT)
        .order_by(Edition.completed_at.desc(), Edition.id.desc()).limit(1)
    )
