"""Canonical URLs, the sanitiser and plain text: examples and properties."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.gather.clean import (
    canonical_url,
    derive_title,
    excerpt,
    html_to_text,
    sanitize_html,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ("HTTPS://Example.ORG/Path?a=1", "https://example.org/Path?a=1"),
    ("https://example.org:443/x", "https://example.org/x"),
    ("http://example.org:80/x", "http://example.org/x"),
    ("http://example.org:8080/x", "http://example.org:8080/x"),
    ("https://example.org/x?utm_source=rss&id=7&utm_medium=feed", "https://example.org/x?id=7"),
    ("https://example.org/x?fbclid=1&gclid=2&mc_cid=3&mc_eid=4", "https://example.org/x"),
    ("https://example.org/x#comments", "https://example.org/x"),
    ("https://example.org", "https://example.org/"),
    ("https://example.org/a?b=1&a=2", "https://example.org/a?b=1&a=2"),
])
def test_canonical_url_examples(raw: str, expected: str) -> None:
    assert canonical_url(raw) == expected


def test_canonical_url_keeps_fragment_when_asked() -> None:
    assert canonical_url("https://ex.org/day#post-2", keep_fragment=True) == (
        "https://ex.org/day#post-2")


def test_canonical_url_resolves_relative_links() -> None:
    assert canonical_url("../b?utm_campaign=x", "https://ex.org/a/c/") == "https://ex.org/a/b"


_urls = st.builds(
    lambda scheme, host, port, path, params: (
        f"{scheme}://{host}{port}/{path}" + ("?" + "&".join(f"{k}={v}" for k, v in params)
                                             if params else "")
    ),
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}\.(org|com|example)", fullmatch=True),
    st.sampled_from(["", ":80", ":443", ":8080"]),
    st.from_regex(r"[a-z0-9/_-]{0,20}", fullmatch=True),
    st.lists(st.tuples(st.sampled_from(["utm_source", "utm_x", "id", "page", "fbclid", "q"]),
                       st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True)), max_size=4),
)


@settings(max_examples=300)
@given(_urls)
def test_canonical_url_is_idempotent_and_drops_only_tracking(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once
    kept = parse_qsl(urlsplit(once).query)
    original = [(k, v) for k, v in parse_qsl(urlsplit(url).query)
                if not k.startswith("utm_") and k != "fbclid"]
    assert kept == original
    assert urlsplit(once).hostname == urlsplit(url).hostname.lower()


@pytest.mark.parametrize("attack", [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">x</a>',
    '<iframe src="https://evil.example"></iframe>',
    '<p style="background:url(javascript:alert(1))" onmouseover="alert(1)">x</p>',
    "<style>body{display:none}</style>",
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<svg><script>alert(1)</script></svg>',
    '<form action="https://evil.example"><input name=x></form>',
])
def test_sanitiser_removes_active_content(attack: str) -> None:
    cleaned = sanitize_html(attack, "https://ex.org/")
    lowered = cleaned.lower()
    for bad in ("<script", "onerror", "onmouseover", "javascript:", "<iframe", "<style",
                "<svg", "<form", "<input", "style="):
        assert bad not in lowered


def test_sanitiser_keeps_the_allow_list() -> None:
    html = ('<p>A <em>b</em> <strong>c</strong> <b>d</b> <i>e</i><br>'
            '<a href="https://x.org/">l</a></p><ul><li>1</li></ul><ol><li>2</li></ol>'
            "<blockquote>q</blockquote><h1>dropped tag, kept text</h1>")
    cleaned = sanitize_html(html, "https://ex.org/")
    for tag in ("<p>", "<em>", "<strong>", "<b>", "<i>", "<br>", "<ul>", "<ol>", "<li>",
                "<blockquote>"):
        assert tag in cleaned
    assert "<h1>" not in cleaned and "dropped tag, kept text" in cleaned


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("<>\"'=/ abcscriptonerrorjavascript:&;()")),
               max_size=120))
def test_sanitiser_output_never_holds_a_script_or_handler(fragment: str) -> None:
    cleaned = sanitize_html(fragment, "https://ex.org/").lower()
    assert "<script" not in cleaned
    assert " onerror=" not in cleaned
    assert 'href="javascript:' not in cleaned


def test_html_to_text_keeps_paragraphs_lists_and_link_targets() -> None:
    text = html_to_text('<p>One <a href="https://x.org/a">link</a>.</p><ul><li>a</li>'
                        "<li>b</li></ul><p>Two</p>")
    assert text == "One link (https://x.org/a).\n\n- a\n- b\n\nTwo"


def test_derive_title_takes_the_first_sentence_on_a_word_boundary() -> None:
    assert derive_title("Short one. Then more.") == "Short one."
    long = "word " * 40
    title = derive_title(long)
    assert len(title) <= 80 and title.endswith("…") and "wor…" not in title


def test_excerpt_leaves_short_text_alone() -> None:
    assert excerpt("  a   b  ", 10) == "a b"
    assert excerpt("alpha beta gamma delta", 12) == "alpha beta…"
