"""Article data is data: quotes, markup, template syntax and handlers come out inert and intact.

mjml 0.12.0 writes attribute values unescaped; digest.render patches that. These tests fail
without the patch (an `x" onerror="…` title becomes a live attribute).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.compose import compose, weekly_period
from digest.config import DigestConfig
from digest.render import environment, render_edition
from tests.factories import NOW, article, settings
from tests.htmlcheck import read_html

NASTY = [
    'x" onerror="alert(1)',
    "<script>alert(1)</script>",
    "Tom & Jerry's \"quote\" <b>bold</b>",
    "{{ 7*7 }} {% if true %}jinja{% endif %} ${x}",
    "a' onmouseover='alert(2)",
    "</title><script>alert(3)</script>",
]


@pytest.mark.parametrize("nasty", NASTY)
def test_nasty_text_is_inert_and_intact(tmp_path: Path, nasty: str) -> None:
    arts = [
        article(1, title=nasty, credit=nasty, author=nasty, summary=nasty,
                url="https://news.example.org/a?x=1&y=\"2\"", category=nasty),
        article(2, title=nasty, credit=nasty, hours_ago=2, category="Europe"),
    ]
    edition = compose(arts, DigestConfig(), weekly_period(NOW, NOW.tzinfo, 7))  # type: ignore[arg-type]
    rendered = render_edition(edition, settings(tmp_path), environment(), now=NOW, nonce="n")
    page = read_html(rendered.html)
    for tag, attrs in page.elements:
        assert tag != "script", "a script element came out of article data"
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # The text survives, decoded, where a reader sees it.
    assert nasty in page.all_text or " ".join(nasty.split()) in page.all_text
    assert nasty in page.attrs("img", "alt")
    assert "https://news.example.org/a?x=1&y=\"2\"" in page.attrs("a", "href")
    # Template syntax in article data is shown, never evaluated.
    assert "49" not in page.all_text.replace("2026", "")
    assert nasty in rendered.text


def test_mjml_attribute_escaping_patch_is_in_force() -> None:
    from digest.render import mjml_to_html

    html = mjml_to_html(
        '<mjml><mj-body><mj-section><mj-column><mj-image src="https://x.org/i.png" '
        'alt="a &quot; onerror=&quot;alert(1)" /></mj-column></mj-section></mj-body></mjml>'
    )
    page = read_html(html)
    assert page.attrs("img", "alt") == ['a " onerror="alert(1)']
    assert all(not any(k.startswith("on") for k in a) for _, a in page.elements)
