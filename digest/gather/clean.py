"""Pure helpers that make feed data safe and comparable: canonical URLs, sanitised HTML,
plain text, derived titles and excerpts."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import nh3

# The small allow-list of tags an email summary may keep.
ALLOWED_TAGS = frozenset(
    {"p", "br", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote"}
)
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
# Tags removed together with their content, not just unwrapped.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template",
                                  "noscript", "svg", "math", "form", "select", "textarea",
                                  "head", "title"})
TRACKING_PARAMS = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid"})
DEFAULT_PORTS = {"http": 80, "https": 443}
SUMMARY_MAX_CHARS = 20_000


def canonical_url(url: str, base: str | None = None, *, keep_fragment: bool = False) -> str:
    """The identity of an article's URL.

    Scheme and host lower-cased, default port dropped, tracking parameters
    (utm_*, fbclid, gclid, mc_cid, mc_eid) removed, everything else kept in order.
    The fragment is dropped unless ``keep_fragment`` (feeds that tell items apart
    by anchor on one page).
    """
    absolute = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = parts.path or ("/" if netloc else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not _is_tracking(k)]
        if len(kept) != len(pairs):
            query = urlencode(kept, doseq=False, safe="/:@!$'()*,;")
    fragment = parts.fragment if keep_fragment else ""
    return urlunsplit((scheme, netloc, path, query, fragment))


def _is_tracking(key: str) -> bool:
    lowered = key.lower()
    return lowered.startswith("utm_") or lowered in TRACKING_PARAMS


def is_web_url(url: str | None) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def sanitize_html(fragment: str, base_url: str | None = None) -> str:
    """Reduce feed HTML to the email-safe allow-list, with links made absolute."""
    if not fragment:
        return ""
    relative: tuple[Literal["rewrite_with_base"], str] | Literal["deny"] = (
        ("rewrite_with_base", base_url) if base_url and is_web_url(base_url) else "deny"
    )
    cleaned = nh3.clean(
        fragment[:SUMMARY_MAX_CHARS * 5],
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={"a": {"href"}},
        url_schemes=set(ALLOWED_SCHEMES),
        url_relative=relative,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return cleaned.strip()


class _TextMaker(HTMLParser):
    """Turns sanitised HTML into readable plain text, keeping link targets."""

    BLOCKS = frozenset({"p", "blockquote", "ul", "ol", "div", "h1", "h2", "h3", "h4", "h5",
                        "h6", "table", "tr", "figure", "section", "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.href: str | None = None
        self.link_text: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROPPED_WITH_CONTENT:
            self.skip += 1
        elif tag in self.BLOCKS:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in DROPPED_WITH_CONTENT:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n\n")
        elif tag == "a" and self.href is not None:
            label = "".join(self.link_text).strip()
            if is_web_url(self.href) and self.href not in (label, label.rstrip("/")):
                self.out.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.href is not None:
            self.link_text.append(data)
        self.out.append(data)

    def text(self) -> str:
        raw = "".join(self.out)
        lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in raw.split("\n")]
        joined = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", joined).strip()


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: paragraphs as blank lines, links as ``text (url)``."""
    if not fragment:
        return ""
    maker = _TextMaker()
    maker.feed(fragment)
    maker.close()
    return maker.text()


def plain_text(value: str | None, *, is_html: bool | None = None) -> str:
    """A single line of plain text from a value (a title, a name).

    ``is_html`` says whether the value is markup; None guesses from its characters.
    Text that is not markup is never parsed as such: "3 <5" stays "3 <5".
    """
    if not value:
        return ""
    if is_html or (is_html is None and ("<" in value or "&" in value)):
        value = html_to_text(value) if "<" in value else html.unescape(value)
    return re.sub(r"\s+", " ", value).strip()


def excerpt(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, cut on a word boundary with an ellipsis."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def derive_title(text: str, limit: int = 80) -> str:
    """A title for an item that has none: its first sentence, at most ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text).strip()
    match = re.match(r"(.+?[.!?])(\s|$)", flat)
    sentence = match.group(1) if match else flat
    return excerpt(sentence, limit)
