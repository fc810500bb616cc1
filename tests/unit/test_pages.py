"""Article page HTML → metadata."""

from __future__ import annotations

from datetime import UTC, datetime

from digest.gather.pages import parse_page
from tests.conftest import read_data


def test_opengraph_and_meta_tags() -> None:
    meta = parse_page(read_data("pages/opengraph.html"), "https://statecraft.example/x?utm=1")
    assert meta.title == "The Case for Withdrawing U.S. Troops from Iraq"
    assert meta.description is not None and meta.description.startswith("And as long as")
    assert meta.image == "https://statecraft.example/wp-content/uploads/convoy-scaled.jpg"
    assert (meta.image_width, meta.image_height) == (2560, 1440)
    assert meta.section == "Middle East"
    assert meta.author == "Jane Roe"
    assert meta.canonical == "https://statecraft.example/iraq-withdrawal/"
    assert meta.published == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_json_ld_news_article_in_a_graph() -> None:
    meta = parse_page(read_data("pages/jsonld.html"), "https://statecraft.example/sudan")
    assert meta.title == "Sudan's bloody war is immune to the art of the deal"  # twitter first
    assert meta.description == "For over 500 days, the world watched."
    assert meta.image == "https://cdn.statecraft.example/sudan.jpg"
    assert meta.section == "Africa"
    assert meta.author == "Amira Osman, Ali Musa"
    assert meta.published == datetime(2026, 11, 23, 8, 15, tzinfo=UTC)


def test_bare_page_falls_back_to_title_and_description() -> None:
    meta = parse_page(read_data("pages/bare.html"), "https://x.example/p")
    assert meta.title == "Just a title"
    assert meta.description == "Only a description & nothing else."
    assert meta.image is None and meta.author is None and meta.section is None


def test_garbage_gives_empty_metadata() -> None:
    meta = parse_page(b"\xff\xfe\x00garbage<<<>>>", "https://x.example/p")
    assert meta.image is None and meta.canonical is None


def test_non_web_image_is_refused() -> None:
    html = b'<meta property="og:image" content="javascript:alert(1)">'
    assert parse_page(html, "https://x.example/p").image is None
