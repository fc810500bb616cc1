"""Edition → HTML and text: structure, client rules and the placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from digest.compose import compose, weekly_period
from digest.config import DigestConfig, Settings
from digest.domain import Edition, Personal, RenderedEdition, personalise
from digest.errors import TemplateError
from digest.render import environment, make_subject, render_edition, wrap
from tests.factories import NOW, article, settings
from tests.htmlcheck import read_html

SECTIONS = ("Middle East", "Europe", "Asia", "Africa")


def _edition(count: int = 8, **overrides: object) -> Edition:
    arts = [article(i, category=SECTIONS[i % 4], hours_ago=i,
                    image=None if i % 3 == 0 else f"https://cdn.example.org/{i}.jpg")
            for i in range(1, count + 1)]
    cfg = DigestConfig(sections=SECTIONS, max_articles=max(count, 1))
    return compose(arts, cfg, weekly_period(NOW, NOW.tzinfo, 7), **overrides)  # type: ignore[arg-type]


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return settings(tmp_path)


def _render(cfg: Settings, edition: Edition | None = None) -> RenderedEdition:
    return render_edition(edition or _edition(), cfg, environment(), now=NOW, nonce="abc123")


def test_html_is_a_complete_responsive_document(cfg: Settings) -> None:
    html = _render(cfg).html
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert re.search(r'<html[^>]* lang="en"', html)
    assert "@media" in html
    assert 'name="color-scheme"' in html
    assert "<mj-" not in html and "{{" not in html and "{%" not in html
    assert "fonts.googleapis.com" not in html and "<script" not in html.lower()


def test_every_image_has_alt_and_every_link_is_absolute(cfg: Settings) -> None:
    page = read_html(_render(cfg).html)
    alts = page.attrs("img", "alt")
    assert alts and all(alt for alt in alts)
    hrefs = [h for h in page.attrs("a", "href") if h is not None]
    assert hrefs
    for href in hrefs:
        assert href.startswith(("https://", "http://", "%%digest.")), href
    srcs = page.attrs("img", "src")
    assert all(s and s.startswith("https://") for s in srcs)


def test_layout_tables_are_presentational(cfg: Settings) -> None:
    page = read_html(_render(cfg).html)
    tables = [a for t, a in page.elements if t == "table"]
    assert tables and all(a.get("role") == "presentation" for a in tables)


def test_every_article_is_in_both_parts(cfg: Settings) -> None:
    edition = _edition()
    rendered = _render(cfg, edition)
    page = read_html(rendered.html)
    for art in edition.articles:
        assert art.title in page.all_text
        assert art.url in page.attrs("a", "href")
        assert art.title in rendered.text
        assert art.url in rendered.text


def test_sections_appear_in_order_in_both_parts(cfg: Settings) -> None:
    rendered = _render(cfg)
    text_positions = [rendered.text.index(f"\n{s.upper()}\n") for s in SECTIONS]
    assert text_positions == sorted(text_positions)
    html_text = read_html(rendered.html).all_text
    html_text = html_text[html_text.index("Keep reading"):]  # after the lead and its label
    html_positions = [html_text.index(s) for s in SECTIONS]
    assert html_positions == sorted(html_positions)


def test_text_part_is_wrapped_at_78_but_never_breaks_a_url(cfg: Settings) -> None:
    long_url = "https://news.example.org/" + "very-long-slug-" * 8
    arts = [article(1, summary="word " * 80, url=long_url)]
    edition = compose(arts, DigestConfig(), weekly_period(NOW, NOW.tzinfo, 7))  # type: ignore[arg-type]
    text = _render(cfg, edition).text
    for line in text.splitlines():
        assert len(line) <= 78 or "://" in line or "%%digest." in line, line
    assert long_url in text


def test_footer_has_address_and_personal_links_in_both_parts(cfg: Settings) -> None:
    rendered = _render(cfg)
    markers = Personal.markers("abc123")
    for body in (rendered.html, rendered.text):
        assert cfg.publication.postal_address in body
        assert markers.unsubscribe_url in body
        assert markers.preferences_url in body
        assert markers.email in body
        assert "https://news.example.org/archive/2026-W48" in body


def test_personalise_replaces_every_marker(cfg: Settings) -> None:
    rendered = _render(cfg)
    values = Personal("a&b@example.org", "https://x.org/u/T", "https://x.org/p/T")
    html = personalise(rendered.html, rendered.markers, values,
                       escape=lambda v: v.replace("&", "&amp;"))
    assert "%%digest" not in html and "a&amp;b@example.org" in html


def test_subject_template() -> None:
    edition = _edition(3)
    from digest.config import Publication

    pub = Publication("The Review", "https://r.example/", "d@r.example", "Street 1")
    assert make_subject("{publication}: {lead}", pub, edition, "1 Dec") == (
        f"The Review: {edition.lead.title}")  # type: ignore[union-attr]
    assert make_subject("{publication} · {date}", pub, edition, "1 Dec") == "The Review · 1 Dec"


def test_twenty_articles_stay_under_gmails_clipping_limit(cfg: Settings) -> None:
    html = _render(cfg, _edition(20)).html
    assert len(html.encode("utf-8")) < 102 * 1024


def test_wrap_keeps_paragraphs_and_bullets() -> None:
    assert wrap("a b\nc\n\nd") == "a b c\n\nd"
    wrapped = wrap("- " + "x " * 50)
    assert all(line.startswith(("- ", "  ")) for line in wrapped.splitlines())


def test_broken_template_is_a_template_error(cfg: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "digest.mjml.j2").write_text("<mjml><mj-body>{% if %}</mj-body></mjml>")
    with pytest.raises(TemplateError, match=r"digest\.mjml\.j2:1"):
        render_edition(_edition(), cfg, environment(folder), now=NOW)


def test_unknown_mjml_tag_is_a_template_error(cfg: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "digest.mjml.j2").write_text("<mjml><mj-body><mj-bogus/></mj-body></mjml>")
    with pytest.raises(TemplateError, match="MJML could not render"):
        render_edition(_edition(), cfg, environment(folder), now=NOW)


def test_editor_templates_override_packaged_ones_partially(cfg: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    (folder / "partials").mkdir(parents=True)
    (folder / "partials" / "footer.mjml.j2").write_text(
        "<mj-section><mj-column><mj-text>Custom footer {{ publication.postal_address }}"
        "</mj-text></mj-column></mj-section>")
    html = render_edition(_edition(), cfg, environment(folder), now=NOW).html
    assert "Custom footer" in html
