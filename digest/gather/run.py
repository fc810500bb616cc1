"""Gather: fetch every source concurrently, parse what came back, store new articles.

One source failing (HTTP error, timeout, too large, not a feed) is named in the
report with its reason and stored on the source; every other source is still
gathered and stored. Each source's articles are committed as soon as it is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from ..config import Settings
from ..db import Database
from ..errors import SourceError
from ..queries import articles as article_queries
from ..queries import sources as source_queries
from .feeds import ParsedFeed, parse_feed
from .fetch import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, Fetched, fetch, make_client

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class SourceReport:
    """What gathering one source did."""

    name: str
    status: str  # ok, not_modified, error
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # items without a link
    error: str | None = None

    @property
    def failed(self) -> bool:
        """True when the source could not be read."""
        return self.status == "error"


@dataclass(frozen=True)
class GatherReport:
    """What one gather run did, source by source."""

    sources: tuple[SourceReport, ...]

    @property
    def failed(self) -> tuple[SourceReport, ...]:
        """The sources that could not be read."""
        return tuple(s for s in self.sources if s.failed)

    @property
    def new(self) -> int:
        """How many new articles were stored."""
        return sum(s.new for s in self.sources)


def gather(
    settings: Settings,
    db: Database,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> GatherReport:
    """Fetch every configured source and store what is new or changed."""
    with db.session() as session:
        states = source_queries.sync_sources(session, settings.sources)
    return asyncio.run(_gather(states, db, now, concurrency, timeout, max_bytes))


async def _gather(
    states: Sequence[source_queries.SourceState],
    db: Database,
    now: Callable[[], datetime],
    concurrency: int,
    timeout: float,
    max_bytes: int,
) -> GatherReport:
    limit = asyncio.Semaphore(concurrency)

    async def one(state: source_queries.SourceState) -> tuple[
        source_queries.SourceState, Fetched | SourceError
    ]:
        async with limit:
            try:
                return state, await fetch(client, state.url, etag=state.etag,
                                          last_modified=state.last_modified, timeout=timeout,
                                          max_bytes=max_bytes)
            except SourceError as exc:
                return state, exc

    reports: dict[str, SourceReport] = {}
    client: httpx.AsyncClient
    async with make_client(timeout) as client:
        for finished in asyncio.as_completed([one(s) for s in states]):
            state, outcome = await finished
            reports[state.name] = _store(db, state, outcome, now())
    return GatherReport(tuple(reports[s.name] for s in states))


def _store(
    db: Database,
    state: source_queries.SourceState,
    outcome: Fetched | SourceError,
    when: datetime,
) -> SourceReport:
    parsed: ParsedFeed | None = None
    if isinstance(outcome, Fetched) and outcome.body is not None:
        try:
            parsed = parse_feed(outcome.body, outcome.url)
        except SourceError as exc:
            outcome = exc
    with db.session() as session:
        if isinstance(outcome, SourceError):
            source_queries.record_fetch(session, state.id, when=when, status="error",
                                        error=outcome.message)
            return SourceReport(state.name, "error", error=outcome.message)
        if parsed is None:
            source_queries.record_fetch(session, state.id, when=when, status="not_modified",
                                        etag=outcome.etag, last_modified=outcome.last_modified)
            return SourceReport(state.name, "not_modified")
        counts = dict.fromkeys(article_queries.Upsert, 0)
        for draft in parsed.items:
            counts[article_queries.upsert_article(session, draft, state.id, when)] += 1
        source_queries.record_fetch(session, state.id, when=when, status="ok",
                                    etag=outcome.etag, last_modified=outcome.last_modified)
        return SourceReport(
            state.name, "ok",
            new=counts[article_queries.Upsert.NEW],
            updated=counts[article_queries.Upsert.UPDATED],
            unchanged=counts[article_queries.Upsert.UNCHANGED],
            skipped=parsed.skipped,
        )
