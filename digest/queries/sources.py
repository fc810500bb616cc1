"""Reads and writes of the sources table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import SourceConfig
from ..models import Article, Source


@dataclass(frozen=True)
class SourceState:
    """What a fetch needs to know from the last one, and the source's settings."""

    id: int
    config: SourceConfig
    etag: str | None
    last_modified: str | None
    keep_fragments: bool

    @property
    def name(self) -> str:
        """The configured name."""
        return self.config.name

    @property
    def url(self) -> str:
        """The configured URL."""
        return self.config.url


def sync_sources(session: Session, configured: Iterable[SourceConfig]) -> list[SourceState]:
    """Make the table match config.toml (by name) and return each configured source's state."""
    rows = {row.name: row for row in session.scalars(select(Source))}
    states = []
    for cfg in configured:
        row = rows.get(cfg.name)
        if row is None:
            row = Source(name=cfg.name, url=cfg.url)
            session.add(row)
            session.flush()
        elif row.url != cfg.url:
            # A new URL is a new resource: the old validators mean nothing there.
            row.url, row.etag, row.last_modified = cfg.url, None, None
        states.append(SourceState(row.id, cfg, row.etag, row.last_modified,
                                  bool(row.keep_fragments)))
    return states


def record_fetch(
    session: Session,
    source_id: int,
    *,
    when: datetime,
    status: str,
    error: str | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    uses_fragments: bool = False,
) -> None:
    """Store the outcome of one fetch; validators only change on a successful fetch."""
    row = session.get_one(Source, source_id)
    row.fetched_at = when
    row.status = status
    row.error = error
    if status == "ok":
        row.etag, row.last_modified = etag, last_modified
        row.keep_fragments = row.keep_fragments or uses_fragments


@dataclass(frozen=True)
class SourceSummary:
    """A source as `digest sources list` shows it."""

    name: str
    url: str
    fetched_at: datetime | None
    status: str | None
    error: str | None
    articles: int
    configured: bool


def list_sources(session: Session, configured: Iterable[str]) -> Sequence[SourceSummary]:
    """Every known source with its last fetch and article count; ``configured`` names the
    ones still in config.toml."""
    names = set(configured)
    count = (
        select(func.count(Article.id)).where(Article.source_id == Source.id).scalar_subquery()
    )
    rows = session.execute(select(Source, count).order_by(Source.name)).tuples()
    return [SourceSummary(s.name, s.url, s.fetched_at, s.status, s.error, int(n or 0),
                          s.name in names)
            for s, n in rows]
