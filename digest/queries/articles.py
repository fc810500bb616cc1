"""Reads and writes of the articles table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Exists, and_, case, func, or_, select, update
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
             "image_credit", "image_width", "image_height")


def find(session: Session, url: str) -> Article | None:
    """The article stored under this canonical URL."""
    return session.scalar(select(Article).where(Article.url == url))


def upsert_article(
    session: Session,
    draft: domain.ArticleDraft,
    source_id: int | None,
    now: datetime,
    *,
    note: str | None = None,
) -> tuple[Upsert, int]:
    """Store a draft under its canonical URL: insert it, update it in place, or leave it.

    An item whose link changed but whose GUID (unique in its feed) did not is the same
    article: it is found by (source, GUID) and its URL updated, never duplicated.
    """
    row = find(session, draft.url)
    if row is None and draft.guid and source_id is not None:
        row = session.scalar(
            select(Article).where(Article.source_id == source_id, Article.guid == draft.guid)
        )
        if row is not None:
            row.url, row.changed_at = draft.url, now
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
            image_width=draft.image_width,
            image_height=draft.image_height,
            published_at=draft.published_at or now,
            published_estimated=draft.published_at is None,
            updated_at=draft.updated_at,
            first_seen_at=now,
            changed_at=now,
            note=note,
        ))
        session.flush()
        stored = find(session, draft.url)
        assert stored is not None
        return Upsert.NEW, stored.id
    changed = False
    for name in _COMPARED:
        new = getattr(draft, name)
        # A feed that drops an optional field does not erase what we already know.
        if new in (None, "") and name not in ("title",) and not (
            name.startswith("image_") and draft.image_url != row.image_url
        ):
            continue
        if getattr(row, name) != new:
            setattr(row, name, new)
            changed = True
    if draft.published_at is not None and row.published_estimated:
        row.published_at, row.published_estimated = draft.published_at, False
        changed = True
    if draft.updated_at is not None and row.updated_at != draft.updated_at:
        row.updated_at = draft.updated_at
    if note:
        row.note = note
    if changed:
        row.changed_at = now
        return Upsert.UPDATED, row.id
    return Upsert.UNCHANGED, row.id


def fill_missing(session: Session, article_id: int, *, image_url: str | None,
                 image_width: int | None, image_height: int | None,
                 summary_html: str, summary_text: str, author: str | None,
                 category: str | None, now: datetime) -> bool:
    """Complete an article from its page (enrichment): only empty fields are filled."""
    row = session.get_one(Article, article_id)
    changed = False
    if image_url and not row.image_url:
        row.image_width, row.image_height = image_width, image_height
    for name, value in (("image_url", image_url), ("summary_html", summary_html),
                        ("summary_text", summary_text), ("author", author),
                        ("category", category)):
        if value and not getattr(row, name):
            setattr(row, name, value)
            changed = True
    if changed:
        row.changed_at = now
    return changed


def set_flag(session: Session, url: str, *, pinned: bool | None = None,
             excluded: bool | None = None) -> Article | None:
    """Pin, exclude or include the article with this URL; pinning unpins every other."""
    row = find(session, url)
    if row is None:
        return None
    if pinned is not None:
        if pinned:
            session.execute(update(Article).where(Article.pinned.is_(True),
                                                  Article.id != row.id).values(pinned=False))
        row.pinned = pinned
    if excluded is not None:
        row.excluded = excluded
        if excluded:
            row.pinned = False
    return row


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
    """Articles an edition for [since, until) may feature: published in the window (or
    pinned by an editor), not excluded, not featured before."""
    in_window = and_(Article.published_at >= since, Article.published_at < until)
    rows = session.execute(
        select(Article, Source.name)
        .outerjoin(Source, Source.id == Article.source_id)
        .where(
            or_(in_window, Article.pinned.is_(True)),
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
        image_width=row.image_width,
        image_height=row.image_height,
    )


def latest_change(session: Session) -> tuple[datetime | None, int]:
    """When an article last changed, and how many there are (the preview reloads on it)."""
    row = session.execute(
        select(func.max(Article.changed_at), func.count(Article.id),
               func.sum(case((Article.pinned, 1), else_=0)),
               func.sum(case((Article.excluded, 1), else_=0)))
    ).one()
    return row[0], hash((row[1], row[2], row[3]))
