"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), read and validated by hand:
feedparser does not read it.

A document that is not a JSON Feed at all (bad JSON, no version, no items list) is a
SourceError naming what is wrong. One bad item (a wrong type, a date that is not RFC
3339) is skipped with a note, and the rest of the feed is kept.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from ..errors import SourceError
from .clean import is_web_url
from .raw import RawItem

VERSIONS = {
    "https://jsonfeed.org/version/1": "JSON Feed 1.0",
    "https://jsonfeed.org/version/1.1": "JSON Feed 1.1",
}


class _BadItem(ValueError):
    """One item breaks the spec; the message names the field."""


def parse_json_feed(body: bytes, feed_url: str) -> tuple[str, str, list[RawItem], list[str]]:
    """(title, format, raw items, notes about skipped items) of a JSON Feed document."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SourceError("invalid JSON Feed: not UTF-8 (JSON Feed must be UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from None
    except RecursionError:
        raise SourceError("invalid JSON Feed: nested too deeply to read") from None
    if not isinstance(doc, dict):
        raise SourceError("JSON, but not a JSON Feed: the top level is not an object")
    version = doc.get("version")
    if not isinstance(version, str) or not version.startswith("https://jsonfeed.org/version/"):
        raise SourceError("JSON, but not a JSON Feed: no jsonfeed.org \"version\"")
    items = doc.get("items")
    if not isinstance(items, list):
        raise SourceError("invalid JSON Feed: \"items\" must be a list")
    title = doc.get("title") if isinstance(doc.get("title"), str) else ""
    base = doc.get("home_page_url") if is_web_url(doc.get("home_page_url")) else feed_url
    feed_authors = _authors(doc, "feed")
    raw: list[RawItem] = []
    notes: list[str] = []
    for index, item in enumerate(items):
        try:
            raw.append(_item(item, base or feed_url, feed_authors))
        except _BadItem as exc:
            notes.append(f"items[{index}] skipped: {exc}")
    return str(title), VERSIONS.get(version, f"JSON Feed ({version})"), raw, notes


def _item(item: Any, base: str, feed_authors: tuple[str, ...]) -> RawItem:
    if not isinstance(item, dict):
        raise _BadItem("not an object")
    guid = item.get("id")
    if guid is None or isinstance(guid, bool) or not isinstance(guid, str | int | float):
        raise _BadItem("\"id\" is required and must be a string")
    link = _text(item, "url") or _text(item, "external_url")
    link = urljoin(base, link) if link else None
    content_html = _text(item, "content_html")
    content_text = _text(item, "content_text")
    summary = _text(item, "summary")
    images = [u for u in (_text(item, "image"), _text(item, "banner_image")) if u]
    tags = item.get("tags")
    if tags is not None and (not isinstance(tags, list)
                             or not all(isinstance(t, str) for t in tags)):
        raise _BadItem("\"tags\" must be a list of strings")
    return RawItem(
        link=link if link and is_web_url(link) else None,
        guid=str(guid),
        title=_text(item, "title"),
        title_is_html=False,
        summary=_as_html(summary) if summary else "",
        content=content_html or _as_html(content_text),
        authors=_authors(item, "item") or feed_authors,
        category=tags[0] if tags else None,
        images=tuple(urljoin(base, u) for u in images),
        published=_date(item, "date_published"),
        updated=_date(item, "date_modified"),
    )


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadItem(f"\"{key}\" must be a string")
    return value.strip() or None


def _as_html(text: str | None) -> str:
    if not text:
        return ""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join(f"<p>{p.strip()}</p>" for p in escaped.split("\n\n") if p.strip())


def _authors(obj: dict[str, Any], where: str) -> tuple[str, ...]:
    # 1.1 has "authors" (a list); 1.0 had "author" (one object). Both are read.
    found = []
    authors = obj.get("authors")
    if isinstance(authors, list):
        found += [a.get("name") for a in authors if isinstance(a, dict)]
    author = obj.get("author")
    if isinstance(author, dict):
        found.append(author.get("name"))
    return tuple(n.strip() for n in found if isinstance(n, str) and n.strip())


def _date(item: dict[str, Any], key: str) -> datetime | None:
    value = _text(item, key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _BadItem(f"\"{key}\" is not an RFC 3339 date: {value!r}") from None
    if parsed.tzinfo is None:
        raise _BadItem(f"\"{key}\" has no time zone: {value!r}")
    return parsed
