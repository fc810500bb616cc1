"""Feed bytes → drafts, against golden files."""

from __future__ import annotations

import dataclasses
import json
import re
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


GOLDEN = [
    ("rss2.xml", "https://statecraft.example/feed/"),
    ("atom.xml", "https://atomic.example/feed.atom"),
    ("rss091-latin1.xml", "https://revue.example/rss.xml"),
    ("rss10-rdf.xml", "https://aussen.example/rss"),
    ("atom03.xml", "https://oldatom.example/atom.xml"),
    ("rss2-cp1252.xml", "https://quotes.example/feed"),
    ("rss2-utf16.xml", "https://gaiko.example/rss"),
    ("rss2-arabic.xml", "https://shuun.example/rss"),
    ("daily-fragments.xml", "https://brief.example/rss"),
    ("jsonfeed-1.1.json", "https://json.example/feed.json"),
    ("jsonfeed-1.0.json", "https://oldjson.example/feed.json"),
]


@pytest.mark.parametrize(("name", "url"), GOLDEN)
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


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "not an RSS, Atom or JSON feed"),
    (b"<html><body><p>Just a web page</p></body></html>", "not an RSS, Atom or JSON feed"),
    (b"\x00\x01binary", "not an RSS, Atom or JSON feed"),
    (b'{"not": "a feed"}', "JSON, but not a JSON Feed"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', "must be a list"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "invalid JSON at line 1"),
    (b"[1, 2]", "not a JSON Feed"),
])
def test_not_a_feed_is_a_source_error(body: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=re.escape(reason)):
        parse_feed(body, "https://example.org/feed")


def _parse(name: str, url: str = "https://example.org/feed"):  # type: ignore[no-untyped-def]
    return parse_feed(read_data(f"feeds/{name}"), url)


@pytest.mark.parametrize(("name", "expected"), [
    ("rss091-latin1.xml", "RSS 0.91"), ("rss10-rdf.xml", "RSS 1.0"), ("rss2.xml", "RSS 2.0"),
    ("atom03.xml", "Atom 0.3"), ("atom.xml", "Atom 1.0"), ("jsonfeed-1.0.json", "JSON Feed 1.0"),
    ("jsonfeed-1.1.json", "JSON Feed 1.1"),
])
def test_format_is_told_from_the_content(name: str, expected: str) -> None:
    # The URL says nothing (no extension); only the bytes decide.
    assert _parse(name, "https://example.org/f").format == expected


def test_encodings_are_decoded() -> None:
    latin = _parse("rss091-latin1.xml").items
    assert latin[0].title == "L'Europe face à la guerre : quelle stratégie ?"
    assert "« Une erreur »" in latin[0].summary_text
    assert _parse("rss2-cp1252.xml").items[0].title == (
        "\u201cRestraint\u201d isn\u2019t retreat \u2014 it\u2019s strategy")
    jp = _parse("rss2-utf16.xml").items[0]
    assert jp.title == "台湾海峡の抑止力" and jp.category == "アジア"
    assert jp.published_at is not None and jp.published_at.hour == 18  # 03:00 +0900 = 18:00 UTC


def test_rdf_reads_dublin_core() -> None:
    items = _parse("rss10-rdf.xml", "https://aussen.example/rss").items
    assert items[0].author == "Jürgen Müller" and items[0].category == "Europa"
    assert items[0].published_at is not None and items[0].published_at.isoformat() == (
        "2026-11-24T08:00:00+00:00")
    assert items[1].image_url == "https://aussen.example/bilder/ostsee.jpg"


def test_item_without_title_derives_one_in_any_script() -> None:
    items = _parse("rss2-arabic.xml").items
    assert items[0].title == "ميناء الحديدة يستقبل معظم واردات الغذاء."
    assert items[1].title == "https://shuun.example/only-a-link"


def test_fragments_tell_items_apart_on_a_daily_page() -> None:
    parsed = _parse("daily-fragments.xml")
    assert parsed.uses_fragments
    assert [i.url for i in parsed.items] == [
        "https://brief.example/2026-11-24#post-1", "https://brief.example/2026-11-24#post-2",
        "https://brief.example/2026-11-24#post-3"]


def test_fragment_is_kept_when_the_source_is_known_to_use_them() -> None:
    body = read_data("feeds/daily-fragments.xml").split(b"<item>")
    one = b"<item>".join(body[:2]) + b"</channel></rss>"
    assert parse_feed(one, "https://brief.example/rss").items[0].url == (
        "https://brief.example/2026-11-24")
    kept = parse_feed(one, "https://brief.example/rss", keep_fragments=True)
    assert kept.items[0].url == "https://brief.example/2026-11-24#post-1"


def test_repeated_guids_are_ignored() -> None:
    body = read_data("feeds/daily-fragments.xml").replace(b"brief-2", b"brief-1")
    items = parse_feed(body, "https://brief.example/rss").items
    assert [i.guid for i in items] == [None, None, "brief-3"]


def test_json_feed_items() -> None:
    parsed = _parse("jsonfeed-1.1.json", "https://json.example/feed.json")
    one, two, three = parsed.items
    assert one.url == "https://json.example/posts/one"
    assert one.author == "Ana Silva, Bo Chen" and one.category == "Analysis | Americas"
    assert one.image_url == "https://json.example/img/one.jpg"
    assert one.summary_text == "The dek of item one."
    assert two.url == "https://json.example/posts/two" and two.author == "The JSON Desk"
    assert "&lt;angle&gt; brackets &amp; ampersand" in two.summary_html
    assert two.title == "Plain text only."
    assert three.url == "https://elsewhere.example/story"
    assert three.image_url == "https://json.example/img/banner3.png"
    assert parsed.skipped == 1  # id 4: no link
    assert parsed.notes == (
        "items[4] skipped: \"date_published\" is not an RFC 3339 date: 'yesterday'",
        'items[5] skipped: "id" is required and must be a string')
    old = _parse("jsonfeed-1.0.json").items[0]
    assert old.author == "Solo Writer" and old.image_url == "https://oldjson.example/a.png"


def test_default_section_for_items_without_category() -> None:
    items = parse_feed(read_data("feeds/atom03.xml"), "https://oldatom.example/atom.xml",
                       default_section="Arms Control").items
    assert {i.category for i in items} == {"Arms Control"}


def test_plain_text_title_is_not_parsed_as_markup() -> None:
    body = (b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "1", '
            b'"url": "https://x.example/a", "title": "Why 3 <5 & <b>tags</b> stay"}]}')
    assert parse_feed(body, "https://x.example/f").items[0].title == "Why 3 <5 & <b>tags</b> stay"
