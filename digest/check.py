"""The pre-flight check of an edition: what would go wrong in a subscriber's inbox.

Errors block a send; warnings are reported and do not. The checks are pure (they
read the composed edition, its rendering and one built message) except the link
check, which asks every article URL with a HEAD request, all at once, within a
few seconds in total, so an unreachable site never stalls a send.
"""

from __future__ import annotations

import asyncio
import email
import html as html_lib
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx

from .domain import Edition
from .gather.fetch import MAX_REDIRECTS, USER_AGENT
from .gather.run import resolves_public, same_origin

GMAIL_CLIP_BYTES = 102 * 1024
LINK_TIMEOUT = 3.0
LINKS_TOTAL = 5.0
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}|</?mj-[a-z]")

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem found."""

    level: Level
    code: str
    message: str


@dataclass
class CheckReport:
    """Everything the check found."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, code: str, message: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(level, code, message))

    @property
    def errors(self) -> list[Finding]:
        """The findings that block a send."""
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The findings that do not."""
        return [f for f in self.findings if f.level == "warning"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values)
            self.links.append(values.get("src") or "")
        elif tag == "a" and values.get("href") is not None:
            self.links.append(values["href"] or "")


def check_edition(plan: Edition, html: str, text: str, message: bytes) -> CheckReport:
    """The checks that need no network, on one reader's copy (``html`` and ``text`` with
    their personal parts filled in, and the MIME ``message``): size, alt text, parts,
    template syntax, links, headers."""
    report = CheckReport()
    if plan.is_empty:
        report.add("error", "empty", "the edition has no articles")
        return report

    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        per_article = size // max(1, len(plan.articles))
        report.add("error", "size",
                   f"the HTML is {size / 1024:.0f} KB; Gmail clips messages over 102 KB. "
                   f"Cut {1 + (size - GMAIL_CLIP_BYTES) // per_article} articles (each costs about "
                   f"{per_article / 1024:.1f} KB): lower [digest] max_articles or set "
                   "per_section, or shorten the templates")

    tags = _Tags()
    tags.feed(html)
    missing_alt = [img.get("src") for img in tags.images if not (img.get("alt") or "").strip()]
    for src in missing_alt:
        report.add("error", "alt", f"an image has no alt text: {src}")

    for link in tags.links:
        if not re.match(r"(https?:|mailto:)", link or "", re.IGNORECASE):
            report.add("error", "relative-link",
                       f"a link or image is not absolute: {link!r} (mail clients cannot "
                       "resolve it)")

    for article in plan.articles:
        if article.url not in text or article.title not in " ".join(text.split()):
            report.add("error", "text-part",
                       f"{article.title!r} is in the HTML but not (whole) in the text part")

    # Article data may itself contain braces; only what the templates made is checked.
    data = {a.title for a in plan.articles} | {a.summary_text for a in plan.articles} | {
        a.image_credit or "" for a in plan.articles} | {a.author or "" for a in plan.articles}
    for body, name in ((html, "HTML"), (text, "text")):
        stripped = body
        for value in sorted(data, key=len, reverse=True):
            if value:
                stripped = stripped.replace(value, "")
                stripped = stripped.replace(html_lib.escape(value), "")
        found = _TEMPLATE_SYNTAX.search(stripped)
        if found:
            start = max(0, found.start() - 30)
            report.add("error", "template-syntax",
                       f"unrendered template syntax in the {name} part: "
                       f"{stripped[start:found.end() + 30]!r}")

    parsed = email.message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    unsubscribe = str(parsed.get("List-Unsubscribe", ""))
    if not unsubscribe.startswith("<https://") and not unsubscribe.startswith("<http://"):
        report.add("error", "list-unsubscribe", "the List-Unsubscribe header is missing or has "
                   "no web link")
    if parsed.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
        report.add("error", "list-unsubscribe-post",
                   "the List-Unsubscribe-Post header (RFC 8058 one-click) is missing")

    for article in plan.articles:
        if not article.summary_text.strip():
            report.add("warning", "dek", f"{article.title!r} has no dek")
        if article.image_url and not article.image_credit:
            report.add("warning", "credit", f"{article.title!r} has an image without a credit")
    return report


async def _ask(client: httpx.AsyncClient, url: str, sources: list[str]) -> str | None:
    """Why ``url`` does not answer, or None. Every redirect hop must be a public address
    or one of the sources' own (article links come from feeds: no internal probing)."""
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if not any(same_origin(url, source) for source in sources):
                public = await resolves_public(url)
                if public is None:
                    return f"the host {urlsplit(url).hostname} is not found"
                if not public:
                    return None  # an internal address: not ours to probe
            response = await client.head(url)
            if response.status_code in (403, 405, 501):
                async with client.stream("GET", url) as streamed:
                    response = streamed
            if not response.is_redirect:
                return f"HTTP {response.status_code}" if response.status_code >= 400 else None
            url = urljoin(url, response.headers.get("Location", ""))
        return f"more than {MAX_REDIRECTS} redirects"
    except httpx.TimeoutException:
        return f"no answer within {LINK_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


async def _check_links(urls: list[str], sources: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=LINK_TIMEOUT, follow_redirects=False,
                                 headers={"User-Agent": USER_AGENT}) as client:
        tasks = {url: asyncio.create_task(_ask(client, url, sources)) for url in urls}
        _, pending = await asyncio.wait(tasks.values(), timeout=LINKS_TOTAL)
        for task in pending:
            task.cancel()
        problems = {}
        for url, task in tasks.items():
            if task in pending:
                problems[url] = f"no answer within {LINKS_TOTAL:g} s"
            elif task.result():
                problems[url] = str(task.result())
        return problems


def check_links(plan: Edition, report: CheckReport, sources: list[str] | None = None) -> None:
    """Warn about article links that do not answer (all asked at once, a few seconds).
    Links are probed only on public addresses or on the configured sources' hosts."""
    urls = list(dict.fromkeys(a.url for a in plan.articles if a.url.startswith("http")))
    if not urls:
        return
    for url, problem in asyncio.run(_check_links(urls, sources or [])).items():
        report.add("warning", "link", f"{url} does not answer: {problem}")
