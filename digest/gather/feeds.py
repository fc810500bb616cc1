"""Feed bytes → article drafts. Pure: no network, no database, no clock."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import feedparser

from ..domain import ArticleDraft
from ..errors import SourceError
from .clean import (
    canonical_url,
    derive_title,
    excerpt,
    html_to_text,
    is_web_url,
    plain_text,
    sanitize_html,
)

_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SUMMARY_TEXT_LIMIT = 600


@dataclass(frozen=True)
class ParsedFeed:
    """What one feed document yielded."""

    title: str
    format: str
    items: tuple[ArticleDraft, ...]
    skipped: int = 0  # items with no link: a digest entry needs somewhere to keep reading
    notes: tuple[str, ...] = field(default=())


def parse_feed(body: bytes, feed_url: str) -> ParsedFeed:
    """Parse an RSS or Atom document; relative links resolve against ``feed_url``."""
    parsed = feedparser.parse(
        body,
        response_headers={"content-location": feed_url},
        sanitize_html=False,  # digest sanitises with its own, stricter allow-list
        resolve_relative_uris=True,
    )
    version = parsed.get("version") or ""
    if not version and not parsed.entries:
        reason = parsed.get("bozo_exception")
        detail = f": {_short(reason)}" if reason else ""
        raise SourceError(f"not an RSS or Atom feed{detail}")
    items: list[ArticleDraft] = []
    skipped = 0
    for entry in parsed.entries:
        draft = _draft_from_entry(entry, feed_url)
        if draft is None:
            skipped += 1
        else:
            items.append(draft)
    title = plain_text(parsed.feed.get("title")) if parsed.get("feed") else ""
    return ParsedFeed(title=title, format=version or "unknown", items=tuple(items), skipped=skipped)


def _short(exc: object) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _draft_from_entry(entry: Mapping[str, Any], feed_url: str) -> ArticleDraft | None:
    link = _entry_link(entry)
    if link is None:
        return None
    base = link
    summary_source, content_source = _summary_and_content(entry)
    summary_html = sanitize_html(summary_source or content_source, base)
    summary_text = html_to_text(summary_html)
    if len(summary_text) > SUMMARY_TEXT_LIMIT:
        summary_text = excerpt(summary_text, SUMMARY_TEXT_LIMIT)
        summary_html = f"<p>{_escape(summary_text)}</p>"
    title = plain_text(entry.get("title"))
    if not title:
        title = derive_title(summary_text or html_to_text(sanitize_html(content_source, base)))
    if not title:
        title = link
    return ArticleDraft(
        url=canonical_url(link),
        link=link if canonical_url(link) != link else None,
        guid=(entry.get("id") or None),
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        author=_author(entry),
        category=_category(entry),
        image_url=_image(entry, content_source or summary_source, base),
        image_credit=_credit(entry),
        published_at=_date(entry, "published_parsed") or _date(entry, "updated_parsed"),
        updated_at=_date(entry, "updated_parsed"),
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _entry_link(entry: Mapping[str, Any]) -> str | None:
    candidates = [entry.get("link")]
    candidates += [
        link.get("href") for link in entry.get("links", []) if link.get("rel") == "alternate"
    ]
    guid = entry.get("id")
    if entry.get("guidislink") or (isinstance(guid, str) and is_web_url(guid)):
        candidates.append(guid)
    for candidate in candidates:
        if isinstance(candidate, str) and is_web_url(candidate.strip()):
            return candidate.strip()
    return None


def _summary_and_content(entry: Mapping[str, Any]) -> tuple[str, str]:
    summary = entry.get("summary") or ""
    contents = entry.get("content") or []
    content = contents[0].get("value", "") if contents else ""
    # feedparser reports content:encoded as the summary too when there is no description.
    if summary == content:
        summary = ""
    return summary, content


def _author(entry: Mapping[str, Any]) -> str | None:
    names = [plain_text(a.get("name")) for a in entry.get("authors", []) if a.get("name")]
    if not names and entry.get("author"):
        names = [plain_text(entry["author"])]
    names = [n for n in names if n]
    if not names:
        return None
    return ", ".join(dict.fromkeys(names))


def _category(entry: Mapping[str, Any]) -> str | None:
    for tag in entry.get("tags", []):
        term = plain_text(tag.get("term") or tag.get("label"))
        if term:
            return term
    return None


def _image(entry: Mapping[str, Any], html_body: str, base: str) -> str | None:
    candidates: list[str] = []
    for media in entry.get("media_content", []):
        medium = (media.get("medium") or "").lower()
        mime = (media.get("type") or "").lower()
        if medium == "image" or mime.startswith("image/") or (not medium and not mime):
            candidates.append(media.get("url", ""))
    candidates += [thumb.get("url", "") for thumb in entry.get("media_thumbnail", [])]
    candidates += [
        enc.get("href", "")
        for enc in entry.get("enclosures", [])
        if (enc.get("type") or "").lower().startswith("image/")
    ]
    match = _IMG_SRC.search(html_body or "")
    if match:
        candidates.append(match.group(1))
    for candidate in candidates:
        if candidate:
            url = canonical_url(candidate, base, keep_fragment=True)
            if is_web_url(url):
                return url
    return None


def _credit(entry: Mapping[str, Any]) -> str | None:
    for credit in entry.get("media_credit", []):
        text = plain_text(credit.get("content"))
        if text:
            return text
    return None


def _date(entry: Mapping[str, Any], key: str) -> datetime | None:
    # dict.get, not entry.get: feedparser's own get() quietly answers updated_parsed with
    # published_parsed (and warns about it); an item's dates must not be made up.
    value = dict.get(entry, key) if isinstance(entry, dict) else entry.get(key)
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, TypeError):
        return None
