"""Feed bytes → drafts, against golden files."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from digest.errors import SourceError
from digest.gather.feeds import parse_feed
from tests.conftest import read_data


def _as_json(feed_name: str, url: str) -> str:
    parsed = parse_feed(read_data(f"feeds/{feed_name}"), url)
    items = [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v)
         for k, v in dataclasses.asdict(item).items()}
        for item in parsed.items
    ]
    return json.dumps({"title": parsed.title, "format": parsed.format,
                       "skipped": parsed.skipped, "items": items},
                      indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("name", "url"), [
    ("rss2.xml", "https://statecraft.example/feed/"),
    ("atom.xml", "https://atomic.example/feed.atom"),
])
def test_feed_matches_golden_file(name: str, url: str,
                                  golden: Callable[[str, str], None]) -> None:
    golden(f"feeds/{name}.expected.json", _as_json(name, url))


def test_rss_item_fields() -> None:
    items = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/").items
    first = items[0]
    assert first.url == "https://statecraft.example/2026/11/iraq-withdrawal/?ref=home"
    assert first.author == "Jane Roe"
    assert first.category == "Analysis | Middle East"
    assert first.image_url == "https://cdn.statecraft.example/img/convoy.jpg"
    assert first.image_credit is not None and first.image_credit.endswith("Photo: U.S. Army")
    assert first.published_at is not None and first.published_at.isoformat() == (
        "2026-11-24T08:00:00+00:00")


def test_feed_html_is_sanitised_and_links_made_absolute() -> None:
    items = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/").items
    html = items[0].summary_html
    assert "<script" not in html and "onclick" not in html and "alert" not in html
    assert 'href="https://statecraft.example/about/"' in html
    assert "<iframe" not in items[1].summary_html and "evil" not in items[1].summary_html


def test_relative_item_link_resolves_against_the_feed_url() -> None:
    items = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/").items
    assert items[1].url == "https://statecraft.example/2026/11/sudan/"
    assert items[1].image_url == "https://statecraft.example/img/fasher.jpg"


def test_item_without_link_is_skipped_and_counted() -> None:
    parsed = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/")
    assert parsed.skipped == 1
    assert all(item.title != "An item with no link at all" for item in parsed.items)


def test_item_without_title_gets_its_first_sentence() -> None:
    items = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/").items
    assert items[2].title == "A dispatch without a title."


def test_item_without_date_has_none_to_be_stamped_when_first_seen() -> None:
    items = parse_feed(read_data("feeds/rss2.xml"), "https://statecraft.example/feed/").items
    undated = next(i for i in items if i.title == "Undated note")
    assert undated.published_at is None
    assert undated.image_url == "https://cdn.statecraft.example/img/note.png"


def test_atom_xml_base_and_javascript_links() -> None:
    items = parse_feed(read_data("feeds/atom.xml"), "https://atomic.example/feed.atom").items
    assert items[0].url == "https://atomic.example/blog/posts/europe-rearmament"
    assert items[0].title == "Europe\u2019s rearmament needs diplomacy"
    assert items[1].author == "Grace Lin, Daniel Cho"
    assert "javascript" not in items[1].summary_html
    assert items[1].url == "https://atomic.example/blog/posts/taiwan"


@pytest.mark.parametrize("body", [
    b"", b"<html><body><p>Just a web page</p></body></html>", b"\x00\x01binary",
    b'{"not": "a feed"}',
])
def test_not_a_feed_is_a_source_error(body: bytes) -> None:
    with pytest.raises(SourceError, match="not an RSS or Atom feed"):
        parse_feed(body, "https://example.org/feed")
