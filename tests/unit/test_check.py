"""The pre-flight check: each error and warning, and no false alarm on article data."""

from __future__ import annotations

from pathlib import Path

from digest.check import check_edition
from digest.compose import compose, weekly_period
from digest.config import DigestConfig, Settings
from digest.deliver.message import MessageTemplate, Recipient
from digest.domain import Edition, Personal, personalise
from digest.render import environment, render_edition
from tests.factories import NOW, article, settings

SAMPLE = Personal("reader@example.com", "https://news.example.org/unsubscribe/T",
                  "https://news.example.org/preferences/T")


def _plan(arts: list, **cfg: object) -> Edition:  # type: ignore[type-arg]
    return compose(arts, DigestConfig(**cfg), weekly_period(NOW, NOW.tzinfo, 7))  # type: ignore[arg-type]


def _check(s: Settings, plan: Edition, templates: Path | None = None,
           message: bytes | None = None) -> list[tuple[str, str]]:
    rendered = render_edition(plan, s, environment(templates), now=NOW, nonce="n0nce")
    if message is None:
        message = MessageTemplate(rendered, s.publication).build(
            Recipient(SAMPLE.email, None, SAMPLE, "<x@y>"), date=NOW).data
    html = personalise(rendered.html, rendered.markers, SAMPLE)
    text = personalise(rendered.text, rendered.markers, SAMPLE)
    return [(f.level, f.code) for f in check_edition(plan, html, text, message).findings]


def _template_dir(tmp_path: Path, name: str, content: str) -> Path:
    folder = tmp_path / "tpl"
    (folder / "partials").mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content)
    return folder


def test_a_good_edition_has_no_errors(tmp_path: Path) -> None:
    findings = _check(settings(tmp_path), _plan([article(1), article(2, hours_ago=2)]))
    assert [f for f in findings if f[0] == "error"] == []


def test_article_data_with_braces_is_no_false_alarm(tmp_path: Path) -> None:
    plan = _plan([article(1, title="Why {{ templates }} and {% tags %} matter")])
    assert ("error", "template-syntax") not in _check(settings(tmp_path), plan)


def test_empty_edition_is_an_error(tmp_path: Path) -> None:
    s = settings(tmp_path)
    plan = _plan([article(1)])
    rendered = render_edition(plan, s, environment(), now=NOW)
    empty = _plan([])
    report = check_edition(empty, rendered.html, rendered.text, b"")
    assert [(f.level, f.code) for f in report.findings] == [("error", "empty")]


def test_oversized_html_says_what_to_cut(tmp_path: Path) -> None:
    s = settings(tmp_path)
    arts = [article(i, hours_ago=i, summary="word " * 60, category=f"S{i % 9}")
            for i in range(1, 61)]
    plan = _plan(arts, max_articles=60)
    rendered = render_edition(plan, s, environment(), now=NOW)
    message = MessageTemplate(rendered, s.publication).build(
        Recipient(SAMPLE.email, None, SAMPLE, "<x@y>"), date=NOW).data
    report = check_edition(plan, personalise(rendered.html, rendered.markers, SAMPLE),
                           personalise(rendered.text, rendered.markers, SAMPLE), message)
    size = [f for f in report.errors if f.code == "size"]
    assert size and "Gmail clips" in size[0].message and "max_articles" in size[0].message


def test_image_without_alt_and_relative_link(tmp_path: Path) -> None:
    folder = _template_dir(tmp_path, "partials/footer.mjml.j2",
                           '<mj-section><mj-column><mj-image src="https://x.org/a.png" />'
                           '<mj-text><a href="/about">About</a> {{ personal.unsubscribe_url }}'
                           "</mj-text></mj-column></mj-section>")
    findings = _check(settings(tmp_path), _plan([article(1)]), folder)
    assert ("error", "alt") in findings and ("error", "relative-link") in findings


def test_article_missing_from_the_text_part(tmp_path: Path) -> None:
    folder = _template_dir(tmp_path, "digest.txt.j2", "Only a greeting. {{ personal.email }}\n")
    findings = _check(settings(tmp_path), _plan([article(1)]), folder)
    assert ("error", "text-part") in findings


def test_unrendered_template_syntax(tmp_path: Path) -> None:
    folder = _template_dir(tmp_path, "partials/footer.mjml.j2",
                           "<mj-section><mj-column><mj-text>{% raw %}{{ oops }}{% endraw %}"
                           "</mj-text></mj-column></mj-section>")
    assert ("error", "template-syntax") in _check(settings(tmp_path), _plan([article(1)]), folder)


def test_missing_list_unsubscribe_headers(tmp_path: Path) -> None:
    findings = _check(settings(tmp_path), _plan([article(1)]),
                      message=b"Subject: x\r\n\r\nbody\r\n")
    assert ("error", "list-unsubscribe") in findings
    assert ("error", "list-unsubscribe-post") in findings


def test_missing_dek_and_credit_are_warnings(tmp_path: Path) -> None:
    findings = _check(settings(tmp_path), _plan([article(1, summary="", credit=None)]))
    assert ("warning", "dek") in findings and ("warning", "credit") in findings
    assert not [f for f in findings if f[0] == "error"]

