"""The plain data that flows between the stages: sources → articles → edition → bodies.

These are frozen dataclasses with no behaviour that needs a database, a network
or a clock, so the pure stages (parse, compose, render, build a message) can be
tested on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ArticleDraft:
    """One item read from a feed or page, cleaned, not yet stored."""

    url: str  # canonical URL: the article's identity
    title: str
    link: str | None = None  # the link as published, when it differs from url
    guid: str | None = None
    summary_html: str = ""  # sanitised
    summary_text: str = ""
    author: str | None = None
    category: str | None = None
    image_url: str | None = None
    image_credit: str | None = None
    published_at: datetime | None = None
    updated_at: datetime | None = None
    image_width: int | None = None  # as declared by the feed or page, when it says
    image_height: int | None = None


@dataclass(frozen=True)
class Article:
    """A stored article, as the composer and the templates see it."""

    id: int
    url: str
    title: str
    summary_html: str
    summary_text: str
    author: str | None
    category: str | None
    image_url: str | None
    image_credit: str | None
    published_at: datetime
    source: str | None = None
    pinned: bool = False
    image_width: int | None = None
    image_height: int | None = None


@dataclass(frozen=True)
class Period:
    """The stretch of time an edition covers, and its idempotency key (e.g. ``2026-W48``)."""

    key: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Section:
    """A named group of articles, in display order."""

    name: str
    articles: tuple[Article, ...]


@dataclass(frozen=True)
class Edition:
    """What one issue of the digest contains, before rendering."""

    period: Period
    lead: Article | None
    sections: tuple[Section, ...]
    intro_html: str = ""
    intro_text: str = ""
    lead_section: str | None = None  # the section the lead belongs to

    @property
    def section_names(self) -> tuple[str, ...]:
        """Every section the edition shows, the lead's included."""
        names = [self.lead_section] if self.lead_section else []
        return tuple(dict.fromkeys([*names, *(s.name for s in self.sections)]))

    @property
    def articles(self) -> tuple[Article, ...]:
        """Every article in reading order: the lead first, then each section's."""
        rest = tuple(a for s in self.sections for a in s.articles)
        return ((self.lead,) if self.lead else ()) + rest

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to send."""
        return not self.articles


@dataclass(frozen=True)
class Personal:
    """The per-recipient placeholders an edition is rendered with.

    Each value is a marker that cannot occur in article data (it carries a random
    nonce chosen per edition); delivery replaces it with the recipient's value.
    """

    email: str
    unsubscribe_url: str
    preferences_url: str

    @classmethod
    def markers(cls, nonce: str) -> Personal:
        """The markers for one edition."""
        return cls(
            email=f"%%digest.email.{nonce}%%",
            unsubscribe_url=f"%%digest.unsubscribe_url.{nonce}%%",
            preferences_url=f"%%digest.preferences_url.{nonce}%%",
        )

    def items(self) -> tuple[tuple[str, str], ...]:
        """(field name, value) pairs."""
        return (
            ("email", self.email),
            ("unsubscribe_url", self.unsubscribe_url),
            ("preferences_url", self.preferences_url),
        )


@dataclass(frozen=True)
class RenderedEdition:
    """An edition rendered once: subject and bodies with personal markers still in them."""

    subject: str
    preheader: str
    html: str
    text: str
    mjml: str
    nonce: str
    archive_url: str = ""
    article_urls: tuple[str, ...] = field(default=())

    @property
    def markers(self) -> Personal:
        """The markers that delivery substitutes."""
        return Personal.markers(self.nonce)


def personalise(
    text: str, markers: Personal, values: Personal, escape: Callable[[str], str] | None = None
) -> str:
    """Replace an edition's markers with one reader's values (for previews and the archive;
    delivery does the same on encoded bytes, see deliver.message)."""
    for (_, marker), (_, value) in zip(markers.items(), values.items(), strict=True):
        text = text.replace(marker, escape(value) if escape else value)
    return text
