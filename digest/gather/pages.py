"""Article page HTML → metadata: OpenGraph, Twitter card, JSON-LD (NewsArticle) and plain
meta tags. Pure: the caller fetches the page.

Used to enrich feed items that lack an image or a dek, and to add a page that is in
no feed (`digest articles add URL`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

from .clean import canonical_url, is_web_url, plain_text

ARTICLE_TYPES = {"newsarticle", "article", "reportagenewsarticle", "analysisnewsarticle",
                 "opinionnewsarticle", "blogposting", "backgroundnewsarticle", "report",
                 "scholarlyarticle", "techarticle"}


@dataclass(frozen=True)
class PageMeta:
    """What a page says about itself; every field may be missing."""

    title: str | None = None
    description: str | None = None
    image: str | None = None
    section: str | None = None
    author: str | None = None
    canonical: str | None = None
    published: datetime | None = None
    image_width: int | None = None
    image_height: int | None = None


class _HeadReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.canonical: str | None = None
        self.title: list[str] = []
        self.in_title = False
        self.in_jsonld = False
        self.jsonld: list[str] = []
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta":
            key = (values.get("property") or values.get("name") or values.get("itemprop")
                   or "").strip().lower()
            content = values.get("content", "").strip()
            if key and content and key not in self.meta:
                self.meta[key] = content
        elif tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.canonical = values.get("href") or None
        elif tag == "title":
            self.in_title = True
        elif tag == "script" and values.get("type", "").lower() == "application/ld+json":
            self.in_jsonld = True
            self._buffer = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag == "script" and self.in_jsonld:
            self.in_jsonld = False
            self.jsonld.append("".join(self._buffer))

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif self.in_jsonld:
            self._buffer.append(data)


def parse_page(body: bytes, url: str, charset: str | None = None) -> PageMeta:
    """Read a page's metadata; relative URLs resolve against ``url``."""
    text = _decode(body, charset)
    reader = _HeadReader()
    reader.feed(text)
    reader.close()
    meta = reader.meta
    ld = _article_ld(reader.jsonld)

    def first(*values: Any) -> str | None:
        for value in values:
            cleaned = plain_text(value) if isinstance(value, str) else None
            if cleaned:
                return cleaned
        return None

    image = first(meta.get("og:image:secure_url"), meta.get("og:image"),
                  meta.get("twitter:image"), meta.get("twitter:image:src"),
                  _ld_image(ld.get("image")), meta.get("thumbnail"))
    image_url = canonical_url(image, url, keep_fragment=True) if image else None
    canonical = reader.canonical or meta.get("og:url")
    canonical_abs = canonical_url(canonical, url) if canonical else None
    return PageMeta(
        title=first(meta.get("og:title"), meta.get("twitter:title"), ld.get("headline"),
                    "".join(reader.title)),
        description=first(meta.get("og:description"), meta.get("twitter:description"),
                          ld.get("description"), meta.get("description")),
        image=image_url if is_web_url(image_url) else None,
        section=first(meta.get("article:section"), _ld_text(ld.get("articleSection")),
                      meta.get("section")),
        author=first(_ld_author(ld.get("author")), meta.get("author"),
                     meta.get("article:author") if not is_web_url(meta.get("article:author"))
                     else None, meta.get("twitter:creator")),
        canonical=canonical_abs if is_web_url(canonical_abs) else None,
        published=_date(first(meta.get("article:published_time"), ld.get("datePublished"))),
        image_width=_size(meta.get("og:image:width")) if image_url else None,
        image_height=_size(meta.get("og:image:height")) if image_url else None,
    )


def _size(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if 0 < number < 20_000 else None


def _decode(body: bytes, charset: str | None) -> str:
    for encoding in (charset, "utf-8"):
        if encoding:
            try:
                return body.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return body.decode("latin-1")


def _article_ld(blocks: list[str]) -> dict[str, Any]:
    for block in blocks:
        try:
            data = json.loads(block)
        except (json.JSONDecodeError, RecursionError):
            continue
        for node in _nodes(data):
            types = node.get("@type")
            names = [types] if isinstance(types, str) else types if isinstance(types, list) else []
            if any(isinstance(t, str) and t.lower() in ARTICLE_TYPES for t in names):
                return node
    return {}


def _nodes(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [n for item in data for n in _nodes(item)]
    if isinstance(data, dict):
        return [data, *_nodes(data.get("@graph", []))]
    return []


def _ld_text(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    return value if isinstance(value, str) else None


def _ld_image(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("url") or value.get("contentUrl")
    return value if isinstance(value, str) else None


def _ld_author(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"].strip())
        elif isinstance(item, str) and not is_web_url(item):
            names.append(item.strip())
    return ", ".join(n for n in names if n) or None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None
