"""Reading rendered HTML back, to check what a mail client would see."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    """Every element with its attributes, and the visible text."""

    elements: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def attrs(self, tag: str, name: str) -> list[str | None]:
        """The values of one attribute on every element of a tag."""
        return [a.get(name) for t, a in self.elements if t == tag]

    @property
    def all_text(self) -> str:
        """The visible text joined by spaces."""
        return " ".join(" ".join(self.text).split())


class _Reader(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.elements.append((tag, dict(attrs)))
        if tag in ("style", "title", "script"):
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "script"):
            self.skip = max(0, self.skip - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.page.text.append(data)


def read_html(html: str) -> Page:
    """Parse HTML the way a browser tokenises it."""
    page = Page()
    reader = _Reader(page)
    reader.feed(html)
    reader.close()
    return page
