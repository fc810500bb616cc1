"""Reads and writes of the editions and edition_articles tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import domain
from ..models import Article, Edition, EditionArticle, EditionStatus, EditionVariant, Source
from .articles import to_domain


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
    if plan.lead is not None:
        section_of[plan.lead.id] = plan.lead_section or ""
    for position, article in enumerate(plan.articles):
        row.articles.append(EditionArticle(
            article_id=article.id,
            position=position,
            section=section_of.get(article.id, ""),
            is_lead=plan.lead is not None and article.id == plan.lead.id,
        ))
    if status == EditionStatus.SENDING:
        row.enqueued_at = now
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


def stored_plan(session: Session, edition: Edition) -> domain.Edition:
    """The composed edition as it was stored (articles, order, sections, lead)."""
    rows = session.execute(
        select(EditionArticle, Article, Source.name)
        .join(Article, Article.id == EditionArticle.article_id)
        .outerjoin(Source, Source.id == Article.source_id)
        .where(EditionArticle.edition_id == edition.id)
        .order_by(EditionArticle.position)
    ).all()
    lead: domain.Article | None = None
    lead_section: str | None = None
    sections: dict[str, list[domain.Article]] = {}
    for place, article, source in rows:
        view = to_domain(article, source)
        if place.is_lead:
            lead, lead_section = view, place.section or None
        else:
            sections.setdefault(place.section, []).append(view)
    period = domain.Period(edition.period, edition.window_start, edition.window_end)
    return domain.Edition(
        period=period, lead=lead, lead_section=lead_section,
        sections=tuple(domain.Section(name, tuple(arts)) for name, arts in sections.items()),
    )


def variant_key(excluded: Iterable[str]) -> str:
    """The key of a set of excluded sections."""
    return json.dumps(sorted(set(excluded)), ensure_ascii=False)


def get_variant(session: Session, edition_id: int, key: str) -> EditionVariant | None:
    """The stored rendering of an edition for one set of excluded sections."""
    return session.scalar(select(EditionVariant).where(
        EditionVariant.edition_id == edition_id, EditionVariant.key == key))


def save_variant(session: Session, edition_id: int, key: str,
                 rendered: domain.RenderedEdition | None, articles: int) -> EditionVariant:
    """Keep a variant's rendering (or, with ``rendered`` None, that nothing is left)."""
    row = EditionVariant(
        edition_id=edition_id, key=key, articles=articles,
        subject=rendered.subject if rendered else "",
        preheader=rendered.preheader if rendered else "",
        html=rendered.html if rendered else "", text=rendered.text if rendered else "",
    )
    session.add(row)
    session.flush()
    return row


def sent_editions(session: Session, limit: int = 200) -> list[Edition]:
    """Editions that went out (the archive), newest first."""
    return list(session.scalars(
        select(Edition).where(Edition.status == EditionStatus.SENT)
        .order_by(Edition.completed_at.desc(), Edition.id.desc()).limit(limit)
    ))


def recent_sections(session: Session, editions: int = 8) -> list[str]:
    """The sections of the last few sent editions, in the order they appeared."""
    recent = select(Edition.id).where(Edition.status == EditionStatus.SENT).order_by(
        Edition.id.desc()).limit(editions).scalar_subquery()
    rows = session.execute(
        select(EditionArticle.section).where(EditionArticle.edition_id.in_(recent),
                                             EditionArticle.section != "")
        .order_by(EditionArticle.edition_id.desc(), EditionArticle.position)
    ).scalars()
    return list(dict.fromkeys(rows))
