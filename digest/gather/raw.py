"""The one shape every feed format is read into before cleaning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RawItem:
    """One item as a feed format gives it, before cleaning. Links are absolute."""

    link: str | None
    guid: str | None = None
    title: str | None = None
    title_is_html: bool | None = None  # None: guess from the characters
    summary: str = ""  # HTML
    content: str = ""  # HTML
    authors: tuple[str, ...] = ()
    category: str | None = None
    images: tuple[str, ...] = ()  # candidates, best first
    image_sizes: tuple[tuple[str, int, int], ...] = ()  # (url, width, height) when declared
    image_credit: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
