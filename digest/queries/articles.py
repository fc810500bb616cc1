"""Reads and writes of the articles table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Exists, select
from sqlalchemy.orm import Session, joinedload

from .. import domain
from ..models import Article, Edition, EditionArticle, EditionStatus, Source

# Editions whose articles count as featured: they went (or are going) out.
FEATURING_STATES = (EditionStatus.SENDING, EditionStatus.PAUSED, EditionStatus.SENT)


class Upsert(StrEnum):
    """What storing a draft did."""

    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


_COMPARED = ("title", "summary_html", "summary_text", "author", "category", "image_url",
             "image_credit")


def upsert_article(
    session: Session, draft: domain.ArticleDraft, source_id: int | None, now: datetime
) -> Upsert:
    """Store a draft under its canonical URL: insert it, update it in place, or leave it."""
    row = session.scalar(select(Article).where(Article.url == draft.url))
    if row is None:
        session.add(Article(
            url=draft.url,
            link=draft.link,
            guid=draft.guid,
            source_id=source_id,
            title=draft.title,
            summary_html=draft.summary_html,
            summary_text=draft.summary_text,
            author=draft.author,
            category=draft.category,
            image_url=draft.image_url,
            image_credit=draft.image_credit,
            published_at=draft.published_at or now,
            published_estimated=draft.published_at is None,
            updated_at=draft.updated_at,
            first_seen_at=now,
            changed_at=now,
        ))
        session.flush()
        return Upsert.NEW
    changed = False
    for name in _COMPARED:
        new = getattr(draft, name)
        # A feed that drops an optional field does not erase what we already know.
        if new in (None, "") and name not in ("title",):
            continue
        if getattr(row, name) != new:
            setattr(row, name, new)
            changed = True
    if draft.published_at is not None and row.published_estimated:
        row.published_at, row.published_estimated = draft.published_at, False
        changed = True
    if draft.updated_at is not None and row.updated_at != draft.updated_at:
        row.updated_at = draft.updated_at
    if changed:
        row.changed_at = now
        return Upsert.UPDATED
    return Upsert.UNCHANGED


def _featured() -> Exists:
    return (
        select(EditionArticle.article_id)
        .join(Edition, Edition.id == EditionArticle.edition_id)
        .where(EditionArticle.article_id == Article.id, Edition.status.in_(FEATURING_STATES))
        .exists()
    )


def list_articles(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> Sequence[Article]:
    """Stored articles published in [since, until), newest first."""
    query = select(Article).options(joinedload(Article.source)).order_by(
        Article.published_at.desc(), Article.id.desc()
    )
    if since is not None:
        query = query.where(Article.published_at >= since)
    if until is not None:
        query = query.where(Article.published_at < until)
    return session.scalars(query).all()


def candidates(session: Session, since: datetime, until: datetime) -> list[domain.Article]:
    """Articles an edition for [since, until) may feature: not excluded, not featured before."""
    rows = session.execute(
        select(Article, Source.name)
        .outerjoin(Source, Source.id == Article.source_id)
        .where(
            Article.published_at >= since,
            Article.published_at < until,
            Article.excluded.is_(False),
            ~_featured(),
        )
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    return [to_domain(article, source) for article, source in rows]


def to_domain(row: Article, source: str | None = None) -> domain.Article:
    """The plain view of a stored article."""
    return domain.Article(
        id=row.id,
        url=row.url,
        title=row.title,
        summary_html=row.summary_html,
        summary_text=row.summary_text,
        author=row.author,
        category=row.category,
        image_url=row.image_url,
        image_credit=row.image_credit,
        published_at=row.published_at,
        source=source,
        pinned=row.pinned,
    )
