"""RSS 0.9x, 1.0 and 2.0, Atom 0.3 and 1.0, through feedparser, into raw items."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import feedparser

from ..errors import SourceError
from .clean import is_web_url, plain_text
from .raw import RawItem

_FORMATS = {
    "rss090": "RSS 0.90", "rss091n": "RSS 0.91", "rss091u": "RSS 0.91", "rss092": "RSS 0.92",
    "rss093": "RSS 0.93", "rss094": "RSS 0.94", "rss20": "RSS 2.0", "rss10": "RSS 1.0",
    "rss": "RSS", "atom01": "Atom 0.1", "atom02": "Atom 0.2", "atom03": "Atom 0.3",
    "atom10": "Atom 1.0", "atom": "Atom", "cdf": "CDF",
}


def parse_xml_feed(
    body: bytes, feed_url: str, content_type: str | None = None
) -> tuple[str, str, list[RawItem]]:
    """(title, format, raw items) of an XML feed; SourceError when it is not one."""
    headers = {"content-location": feed_url}
    # Only a declared charset is worth passing on; a bare text/xml would make feedparser
    # assume US-ASCII and distrust the document's own encoding declaration.
    if content_type and "charset=" in content_type.lower():
        headers["content-type"] = content_type
    parsed = feedparser.parse(
        body,
        response_headers=headers,
        sanitize_html=False,  # digest sanitises with its own, stricter allow-list
        resolve_relative_uris=True,
    )
    version = parsed.get("version") or ""
    if not version and not parsed.entries:
        raise SourceError(_why_not_a_feed(body, parsed.get("bozo_exception")))
    title = plain_text(parsed.feed.get("title")) if parsed.get("feed") else ""
    return title, _FORMATS.get(version, version or "unknown"), [
        _raw_from_entry(entry) for entry in parsed.entries
    ]


def _why_not_a_feed(body: bytes, problem: object) -> str:
    head = body[:2048].lstrip().lower()
    if not head:
        return "not an RSS, Atom or JSON feed: the response was empty"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return ("not an RSS, Atom or JSON feed: an HTML page (is this the site's address "
                "rather than its feed's?)")
    line = getattr(problem, "getLineNumber", None)
    message = getattr(problem, "getMessage", None)
    if callable(line) and callable(message):
        return f"not an RSS, Atom or JSON feed: invalid XML at line {line()}: {message()}"
    return "not an RSS, Atom or JSON feed"


def _raw_from_entry(entry: Mapping[str, Any]) -> RawItem:
    summary = entry.get("summary") or ""
    contents = entry.get("content") or []
    content = contents[0].get("value", "") if contents else ""
    # feedparser reports content:encoded as the summary too when there is no description.
    if summary == content:
        summary = ""
    title_detail = entry.get("title_detail") or {}
    return RawItem(
        link=_entry_link(entry),
        guid=entry.get("id") or None,
        title=entry.get("title"),
        title_is_html=(title_detail.get("type") in ("text/html", "application/xhtml+xml"))
        or None,
        summary=summary,
        content=content,
        authors=_authors(entry),
        category=_category(entry),
        images=tuple(_images(entry)),
        image_sizes=tuple(_image_sizes(entry)),
        image_credit=_credit(entry),
        published=_date(entry, "published_parsed"),
        updated=_date(entry, "updated_parsed"),
    )


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


def _authors(entry: Mapping[str, Any]) -> tuple[str, ...]:
    names = [a.get("name") for a in entry.get("authors", []) if a.get("name")]
    if not names and entry.get("author"):
        names = [entry["author"]]
    return tuple(str(n) for n in names)


def _category(entry: Mapping[str, Any]) -> str | None:
    for tag in entry.get("tags", []):
        term = tag.get("term") or tag.get("label")
        if term and str(term).strip():
            return str(term)
    return None


def _images(entry: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for media in entry.get("media_content", []):
        medium = (media.get("medium") or "").lower()
        mime = (media.get("type") or "").lower()
        if medium == "image" or mime.startswith("image/") or (not medium and not mime):
            found.append(media.get("url", ""))
    found += [thumb.get("url", "") for thumb in entry.get("media_thumbnail", [])]
    found += [
        enc.get("href", "")
        for enc in entry.get("enclosures", [])
        if (enc.get("type") or "").lower().startswith("image/")
    ]
    return found


def _image_sizes(entry: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    sizes = []
    for media in [*entry.get("media_content", []), *entry.get("media_thumbnail", [])]:
        width, height = _dimension(media.get("width")), _dimension(media.get("height"))
        if media.get("url") and width and height:
            sizes.append((str(media["url"]), width, height))
    return sizes


def _dimension(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 20_000 else None


def _credit(entry: Mapping[str, Any]) -> str | None:
    for credit in entry.get("media_credit", []):
        text = credit.get("content")
        if text and str(text).strip():
            return str(text)
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
