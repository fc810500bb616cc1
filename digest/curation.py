"""Editors' controls over articles: add a page that is in no feed, pin the lead story,
exclude an article from the coming edition and include it again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

from .config import Settings
from .db import Database
from .errors import DigestError
from .gather.clean import canonical_url, is_web_url
from .gather.run import draft_from_page, read_page
from .models import Article
from .queries import articles as queries


@dataclass(frozen=True)
class Curated:
    """An article after an editor's action."""

    url: str
    title: str
    outcome: str  # new, updated, unchanged, pinned, excluded, included


def add_page(settings: Settings, db: Database, url: str, *, now: datetime,
             section: str | None = None, note: str | None = None) -> Curated:
    """Read a page's metadata and store it as an article picked by an editor."""
    if not is_web_url(url):
        raise DigestError(f"{url!r} is not an http(s) URL")
    meta, fetched = asyncio.run(read_page(url, settings.gather))
    draft = draft_from_page(meta, fetched, section=section)
    if draft.published_at is None:
        draft = replace(draft, published_at=now)
    with db.session() as session:
        outcome, _ = queries.upsert_article(session, draft, None, now, note=note)
    return Curated(draft.url, draft.title, outcome.value)


def _flag(db: Database, url: str, outcome: str, **flags: bool) -> Curated:
    with db.session() as session:
        row: Article | None = None
        for candidate in dict.fromkeys((canonical_url(url), canonical_url(url, keep_fragment=True),
                                        url)):
            row = queries.set_flag(session, candidate, **flags)
            if row is not None:
                break
        if row is None:
            raise DigestError(f"no article with the URL {url}",
                              hint="`digest articles` lists them; `digest articles add URL` "
                              "adds a page that is in no feed")
        return Curated(row.url, row.title, outcome)


def pin(db: Database, url: str) -> Curated:
    """Make an article the lead story of the coming edition (unpinning any other)."""
    return _flag(db, url, "pinned", pinned=True, excluded=False)


def unpin(db: Database, url: str) -> Curated:
    """Let the lead story be chosen again."""
    return _flag(db, url, "unpinned", pinned=False)


def exclude(db: Database, url: str) -> Curated:
    """Keep an article out of editions until it is included again."""
    return _flag(db, url, "excluded", excluded=True)


def include(db: Database, url: str) -> Curated:
    """Undo exclude."""
    return _flag(db, url, "included", excluded=False)
