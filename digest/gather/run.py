"""Gather: fetch every source concurrently, parse what came back, store new articles.

One source failing (HTTP error, timeout, too large, TLS, not a feed) is named in the
report with its reason and stored on the source; every other source is still
gathered and stored. Each source's articles are committed as soon as it is read.
Sources with ``enrich = true`` then have the pages of their new articles that lack
an image or a dek read for OpenGraph, Twitter card and JSON-LD metadata.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from ..config import GatherConfig, Settings
from ..db import Database
from ..domain import ArticleDraft
from ..errors import SourceError
from ..queries import articles as article_queries
from ..queries import sources as source_queries
from .clean import canonical_url, excerpt, html_to_text, sanitize_html
from .feeds import ParsedFeed, parse_feed
from .fetch import MAX_REDIRECTS, Fetched, fetch, make_client
from .pages import PageMeta, parse_page

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class SourceReport:
    """What gathering one source did."""

    name: str
    status: str  # ok, not_modified, error
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # items without a link
    enriched: int = 0
    error: str | None = None
    notes: tuple[str, ...] = ()

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


def gather(settings: Settings, db: Database, *, now: Clock = lambda: datetime.now(UTC),
           only: Sequence[str] | None = None) -> GatherReport:
    """Fetch every configured source (or those named in ``only``) and store what is new
    or changed."""
    configured = [s for s in settings.sources if only is None or s.name in only]
    with db.session() as session:
        states = source_queries.sync_sources(session, configured)
    return asyncio.run(_Run(db, settings.gather, now).all(states))


@dataclass
class _Run:
    db: Database
    cfg: GatherConfig
    now: Clock
    reports: dict[str, SourceReport] = field(default_factory=dict)
    writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="digest-store"))

    async def all(self, states: Sequence[source_queries.SourceState]) -> GatherReport:
        limit = asyncio.Semaphore(self.cfg.concurrency)
        try:
            async with make_client(self.cfg.timeout) as client:
                pages: list[asyncio.Task[None]] = []
                tasks = [self._source(client, limit, state, pages) for state in states]
                await asyncio.gather(*tasks)
                await asyncio.gather(*pages)
        finally:
            self.writer.shutdown()
        return GatherReport(tuple(self.reports[s.name] for s in states))

    def _timeout(self, state: source_queries.SourceState) -> float:
        return state.config.timeout or self.cfg.timeout

    async def _source(self, client: httpx.AsyncClient, limit: asyncio.Semaphore,
                      state: source_queries.SourceState,
                      pages: list[asyncio.Task[None]]) -> None:
        async with limit:
            try:
                outcome: Fetched | SourceError = await fetch(
                    client, state.url, etag=state.etag, last_modified=state.last_modified,
                    timeout=self._timeout(state), max_bytes=self.cfg.max_bytes)
            except SourceError as exc:
                outcome = exc
        # Parsing and storing run on one worker thread, in arrival order, so the event loop
        # keeps reading the other sources meanwhile (and writes never contend).
        loop = asyncio.get_running_loop()
        report, to_enrich = await loop.run_in_executor(self.writer, self._store, state, outcome)
        self.reports[state.name] = report
        if to_enrich:
            pages.append(asyncio.create_task(self._enrich(client, limit, state, to_enrich)))

    def _store(self, state: source_queries.SourceState,
               outcome: Fetched | SourceError) -> tuple[SourceReport, list[tuple[int, str]]]:
        when = self.now()
        parsed: ParsedFeed | None = None
        if isinstance(outcome, Fetched) and outcome.body is not None:
            try:
                parsed = parse_feed(outcome.body, outcome.url,
                                    content_type=outcome.content_type,
                                    keep_fragments=state.keep_fragments,
                                    default_section=state.config.section)
            except SourceError as exc:
                outcome = exc
            except Exception as exc:  # noqa: BLE001 - one hostile document stops only itself
                outcome = SourceError(f"could not be read: {type(exc).__name__}: {exc}"[:300])
        with self.db.session() as session:
            if isinstance(outcome, SourceError):
                source_queries.record_fetch(session, state.id, when=when, status="error",
                                            error=outcome.message)
                return SourceReport(state.name, "error", error=outcome.message), []
            if parsed is None:
                source_queries.record_fetch(session, state.id, when=when, status="not_modified",
                                            etag=outcome.etag,
                                            last_modified=outcome.last_modified)
                return SourceReport(state.name, "not_modified"), []
            counts = dict.fromkeys(article_queries.Upsert, 0)
            to_enrich = []
            for draft in parsed.items:
                result, article_id = article_queries.upsert_article(session, draft, state.id,
                                                                    when)
                counts[result] += 1
                if (state.config.enrich and result == article_queries.Upsert.NEW
                        and not (draft.image_url and draft.summary_text)):
                    to_enrich.append((article_id, draft.link or draft.url))
            source_queries.record_fetch(session, state.id, when=when, status="ok",
                                        etag=outcome.etag, last_modified=outcome.last_modified,
                                        uses_fragments=parsed.uses_fragments)
        report = SourceReport(
            state.name, "ok",
            new=counts[article_queries.Upsert.NEW],
            updated=counts[article_queries.Upsert.UPDATED],
            unchanged=counts[article_queries.Upsert.UNCHANGED],
            skipped=parsed.skipped, notes=parsed.notes,
        )
        return report, to_enrich

    async def _enrich(self, client: httpx.AsyncClient, limit: asyncio.Semaphore,
                      state: source_queries.SourceState, items: list[tuple[int, str]]) -> None:
        async def one(article_id: int, url: str) -> bool:
            # A page that cannot be read, or read safely, leaves the article as it is.
            try:
                async with limit:
                    page = await guarded_fetch(client, url, [state.url],
                                               timeout=self._timeout(state),
                                               max_bytes=self.cfg.max_bytes)
                if page is None or page.body is None:
                    return False
                meta = parse_page(page.body, page.url, _charset(page.content_type))
            except Exception:  # noqa: BLE001 - a hostile page changes nothing
                return False
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.writer, self._fill, article_id, url, meta)

        done = await asyncio.gather(*(one(aid, url) for aid, url in items))
        report = self.reports[state.name]
        self.reports[state.name] = replace(report, enriched=sum(done))

    def _fill(self, article_id: int, url: str, meta: PageMeta) -> bool:
        summary_html = sanitize_html(f"<p>{html.escape(meta.description, quote=False)}</p>", url) \
            if meta.description else ""
        with self.db.session() as session:
            return article_queries.fill_missing(
                session, article_id, image_url=meta.image, image_width=meta.image_width,
                image_height=meta.image_height, summary_html=summary_html,
                summary_text=html_to_text(summary_html), author=meta.author,
                category=meta.section, now=self.now())


def _charset(content_type: str | None) -> str | None:
    if content_type and "charset=" in content_type.lower():
        return content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
    return None


def same_origin(url: str, source: str) -> bool:
    """Whether ``url`` is on the same scheme, host and port as ``source``."""
    a, b = urlsplit(url), urlsplit(source)

    def port(parts: SplitResult) -> int | None:
        return parts.port or {"https": 443, "http": 80}.get(parts.scheme)

    return bool(a.hostname) and (a.hostname or "").lower() == (b.hostname or "").lower() and (
        port(a) == port(b))


async def resolves_public(url: str) -> bool | None:
    """Whether every address of the URL's host is a public one; None when it has none."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return False
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM)
    except OSError:
        return None
    return all(ipaddress.ip_address(info[4][0]).is_global for info in infos)


async def may_fetch_page(url: str, sources: Sequence[str]) -> bool:
    """Whether a page a feed points to may be fetched: on a source's own host and port,
    or on public addresses only. A feed must not make digest read internal services."""
    if any(same_origin(url, source) for source in sources):
        return True
    return bool(await resolves_public(url))


async def guarded_fetch(client: httpx.AsyncClient, url: str, sources: Sequence[str], *,
                        timeout: float, max_bytes: int) -> Fetched | None:
    """GET a page found in a feed, following redirects by hand so that every hop passes
    may_fetch_page (a public page must not redirect digest to an internal one). None when
    a hop is refused."""
    for _ in range(MAX_REDIRECTS + 1):
        if not await may_fetch_page(url, sources):
            return None
        page = await fetch(client, url, timeout=timeout, max_bytes=max_bytes,
                           follow_redirects=False)
        if page.location is None:
            return page
        url = urljoin(url, page.location)
    raise SourceError(f"more than {MAX_REDIRECTS} redirects")


def draft_from_page(meta: PageMeta, url: str, *, section: str | None) -> ArticleDraft:
    """An article for a page that is in no feed (`digest articles add`)."""
    identity = canonical_url(url)
    if meta.canonical and urlsplit(meta.canonical).hostname == urlsplit(identity).hostname:
        identity = meta.canonical
    summary_html = sanitize_html(f"<p>{html.escape(meta.description, quote=False)}</p>", url) \
        if meta.description else ""
    return ArticleDraft(
        url=identity,
        title=meta.title or identity,
        link=url if url != identity else None,
        summary_html=summary_html,
        summary_text=excerpt(html_to_text(summary_html), 600),
        author=meta.author,
        category=section or meta.section,
        image_url=meta.image,
        image_width=meta.image_width,
        image_height=meta.image_height,
        published_at=meta.published,
    )


async def read_page(url: str, cfg: GatherConfig) -> tuple[PageMeta, str]:
    """Fetch one page and read its metadata (editors' `articles add`)."""
    async with make_client(cfg.timeout) as client:
        page = await fetch(client, url, timeout=cfg.timeout, max_bytes=cfg.max_bytes)
    if page.body is None:
        raise SourceError(f"{url}: the server sent no page")
    return parse_page(page.body, page.url, _charset(page.content_type)), page.url
