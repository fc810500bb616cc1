"""Feed bytes → article drafts. Pure: no network, no database, no clock.

The format is told from the content, never from the URL or the Content-Type: a
document that starts with ``{`` is read as JSON Feed (feedparser does not read
it), anything else goes to feedparser (RSS 0.9x, 1.0 and 2.0, Atom 0.3 and 1.0).
Both readers produce the same RawItem, and one function turns raw items into
cleaned drafts, so every format gets the same identity and safety rules.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urldefrag

from ..domain import ArticleDraft
from .clean import (
    canonical_url,
    derive_title,
    excerpt,
    html_to_text,
    is_web_url,
    plain_text,
    sanitize_html,
)
from .jsonfeed import parse_json_feed
from .raw import RawItem
from .xmlfeed import parse_xml_feed

_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SUMMARY_TEXT_LIMIT = 600


@dataclass(frozen=True)
class ParsedFeed:
    """What one feed document yielded."""

    title: str
    format: str
    items: tuple[ArticleDraft, ...]
    skipped: int = 0  # items with no link: a digest entry needs somewhere to keep reading
    uses_fragments: bool = False  # items told apart only by #fragment (one page per day)
    notes: tuple[str, ...] = field(default=())


def parse_feed(
    body: bytes,
    feed_url: str,
    *,
    content_type: str | None = None,
    keep_fragments: bool = False,
    default_section: str | None = None,
) -> ParsedFeed:
    """Parse any supported feed format; relative links resolve against ``feed_url``.

    ``keep_fragments`` is remembered per source: once a feed has told items apart by
    their #fragment, fragments stay part of its articles' identity in every later run.
    """
    notes: list[str] = []
    if _looks_like_json(body):
        title, version, raw, notes = parse_json_feed(body, feed_url)
    else:
        title, version, raw = parse_xml_feed(body, feed_url, content_type)
    drafts, skipped, uses_fragments = drafts_from(raw, keep_fragments=keep_fragments,
                                                  default_section=default_section)
    return ParsedFeed(title=title, format=version, items=tuple(drafts), skipped=skipped,
                      uses_fragments=uses_fragments, notes=tuple(notes))


def _looks_like_json(body: bytes) -> bool:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith((b"{", b"["))


# -- raw items → drafts --------------------------------------------------------------------------

def drafts_from(
    raw: Sequence[RawItem], *, keep_fragments: bool = False, default_section: str | None = None
) -> tuple[list[ArticleDraft], int, bool]:
    """Clean raw items into drafts: (drafts, items skipped for lack of a link, whether the
    feed tells items apart by fragment)."""
    linked = [item for item in raw if item.link]
    skipped = len(raw) - len(linked)
    # Items that share a page but differ by #fragment are different articles.
    pages: dict[str, set[str]] = {}
    for item in linked:
        page, fragment = urldefrag(item.link or "")
        pages.setdefault(canonical_url(page), set()).add(fragment)
    uses_fragments = any(len(fragments) > 1 for fragments in pages.values())
    keep = keep_fragments or uses_fragments
    # A GUID repeated on items with different links identifies nothing in this feed.
    guid_counts = Counter(item.guid for item in linked if item.guid)
    drafts = []
    for item in linked:
        guid = item.guid if item.guid and guid_counts[item.guid] == 1 else None
        drafts.append(_draft(item, guid, keep, default_section))
    return drafts, skipped, uses_fragments


def _draft(item: RawItem, guid: str | None, keep_fragment: bool,
           default_section: str | None) -> ArticleDraft:
    link = item.link or ""
    url = canonical_url(link, keep_fragment=keep_fragment)
    summary_html = sanitize_html(item.summary or item.content, link)
    summary_text = html_to_text(summary_html)
    if len(summary_text) > SUMMARY_TEXT_LIMIT:
        summary_text = excerpt(summary_text, SUMMARY_TEXT_LIMIT)
        summary_html = f"<p>{html.escape(summary_text, quote=False)}</p>"
    title = plain_text(item.title, is_html=item.title_is_html) if item.title else ""
    if not title:
        title = derive_title(summary_text or html_to_text(sanitize_html(item.content, link)))
    if not title:
        title = url
    authors = [a for a in (plain_text(a) for a in item.authors) if a]
    image = _first_image(item, link)
    size = next(((w, h) for u, w, h in item.image_sizes
                 if canonical_url(u, link, keep_fragment=True) == image), None)
    return ArticleDraft(
        url=url,
        link=link if link != url else None,
        guid=guid,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        author=", ".join(dict.fromkeys(authors)) or None,
        category=plain_text(item.category) or default_section or None,
        image_url=image,
        image_width=size[0] if size else None,
        image_height=size[1] if size else None,
        image_credit=plain_text(item.image_credit) or None,
        published_at=item.published or item.updated,
        updated_at=item.updated,
    )


def _first_image(item: RawItem, base: str) -> str | None:
    candidates = list(item.images)
    match = _IMG_SRC.search(item.content or item.summary or "")
    if match:
        candidates.append(match.group(1))
    for candidate in candidates:
        if candidate and not candidate.startswith("data:"):
            url = canonical_url(candidate, base, keep_fragment=True)
            if is_web_url(url):
                return url
    return None
