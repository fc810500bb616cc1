"""The edition end to end: thin weeks, the intro, the link check, golden files."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest import editions, subscribers
from digest.app import Context
from digest.compose import weekly_period
from digest.deliver.sink import SmtpSink
from digest.deliver.smtp import SMTPTransport
from digest.demo import shifted_feed
from digest.errors import EditionError
from digest.gather.run import gather
from digest.models import Edition, EditionStatus
from digest.render import render_edition
from digest.sample import SAMPLE_FEED
from tests.conftest import FeedServer, Route
from tests.htmlcheck import read_html

EDITORS = 'editors = ["ed@example.org"]'


def _context(make_context: Callable[..., Context], feed_server: FeedServer, port: int,
             digest: str = "", extra: str = "") -> Context:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=port,
                       digest=digest, extra=extra)
    text = ctx.settings.path.read_text().replace(
        'postal_address = "1 Test Street, Testville"',
        f'postal_address = "1 Test Street, Testville"\n{EDITORS}')
    ctx = make_context(text=text)
    gather(ctx.settings, ctx.db)
    subscribers.add(ctx.db, "ann@example.org", now=ctx.now())
    return ctx


def _period(ctx: Context):  # type: ignore[no-untyped-def]
    return weekly_period(ctx.now(), ctx.settings.timezone, ctx.settings.digest.window_days)


def test_thin_week_skip_sends_nothing_and_stores_nothing(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink.port,
                   digest="min_articles = 50\nthin_policy = \"skip\"")
    outcome = editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp),
                            check_links=False)
    assert outcome.state == editions.SendState.THIN_SKIPPED and outcome.articles == 15
    assert smtp_sink.received == []
    with ctx.db.reader() as session:
        assert session.query(Edition).count() == 0


def test_thin_week_hold_prepares_and_tells_the_editors(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink.port,
                   digest="min_articles = 50\nthin_policy = \"hold\"")
    outcome = editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp),
                            check_links=False)
    assert outcome.state == editions.SendState.HELD and outcome.notified == ["ed@example.org"]
    assert [r.recipients for r in smtp_sink.received] == [("ed@example.org",)]
    assert b"is held: 15 articles" in smtp_sink.received[0].data
    with ctx.db.reader() as session:
        assert [e.status for e in session.query(Edition)] == [EditionStatus.PREPARED]
    again = editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp))
    assert again.state == editions.SendState.NOT_SENDABLE
    assert len(smtp_sink.received) == 1


def test_thin_week_send_goes_out(make_context: Callable[..., Context], feed_server: FeedServer,
                                 smtp_sink: SmtpSink) -> None:
    ctx = _context(make_context, feed_server, smtp_sink.port,
                   digest="min_articles = 50\nthin_policy = \"send\"")
    outcome = editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp),
                            check_links=False)
    assert outcome.state == editions.SendState.COMPLETE
    assert [r.recipients for r in smtp_sink.received] == [("ann@example.org",)]


def test_intro_from_markdown_file_is_sanitised_and_in_both_parts(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    (tmp_path / "intro.md").write_text(
        "Dear readers,\n\nThis week **Iraq** and [our podcast](https://pod.example/ep1).\n\n"
        "<script>alert(1)</script> <img src=x onerror=alert(2)>\n")
    ctx = _context(make_context, feed_server, smtp_sink.port, digest='intro_file = "intro.md"')
    prepared = editions.prepare(ctx, _period(ctx))
    assert prepared is not None
    html, text = prepared.rendered.html, prepared.rendered.text
    assert "<strong>Iraq</strong>" in html and 'href="https://pod.example/ep1"' in html
    page = read_html(html)
    assert all(tag != "script" and not any(k.startswith("on") for k in attrs)
               for tag, attrs in page.elements)
    assert "<script>alert(1)</script>" in page.all_text  # shown as text, inert
    assert "This week Iraq and our podcast (https://pod.example/ep1)." in text
    assert prepared.rendered.preheader.startswith("Dear readers")
    override = editions.prepare(ctx, _period(ctx), intro="Just *this* once.")
    assert override is not None and "<em>this</em>" in override.rendered.html


def test_the_same_intro_as_last_week_is_a_warning(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    from datetime import timedelta

    from digest.compose import explicit_period

    ctx = _context(make_context, feed_server, smtp_sink.port)
    now = ctx.now()
    # Last week: the older half of the articles, sent with an intro.
    older = explicit_period(now - timedelta(hours=100), now - timedelta(hours=40),
                            ctx.settings.timezone)
    sent = editions.send(ctx, older, SMTPTransport(ctx.settings.smtp), intro="Hello again.",
                         check_links=False)
    assert sent.state == editions.SendState.COMPLETE
    prepared = editions.prepare(ctx, _period(ctx), intro="Hello again.")
    assert prepared is not None
    codes = [f.code for f in editions.preflight(ctx, prepared, links=False).warnings]
    assert "intro" in codes
    fresh = editions.prepare(ctx, _period(ctx), intro="Something new.")
    assert fresh is not None
    assert "intro" not in [f.code for f in editions.preflight(ctx, fresh, links=False).warnings]


def test_link_check_warns_without_blocking(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink.port)
    feed_server.routes["/ok"] = Route(b"fine", content_type="text/html")
    feed_server.routes["/slow"] = Route(b"late", content_type="text/html", delay=8)
    from digest.curation import add_page, pin

    feed_server.routes["/page"] = Route(
        b'<html><head><meta property="og:title" content="Local page"></head></html>',
        content_type="text/html")
    add_page(ctx.settings, ctx.db, feed_server.url("/page"), now=ctx.now())
    pin(ctx.db, feed_server.url("/page"))
    feed_server.routes["/page"] = Route(b"gone", status=404)
    prepared = editions.prepare(ctx, _period(ctx))
    assert prepared is not None
    report = editions.preflight(ctx, prepared, links=True)
    assert not report.errors
    problems = [f.message for f in report.warnings if f.code == "link"]
    assert any(feed_server.url("/page") in p and "HTTP 404" in p for p in problems)


def test_check_errors_block_the_send(make_context: Callable[..., Context],
                                     feed_server: FeedServer, smtp_sink: SmtpSink,
                                     tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "digest.txt.j2").write_text("Nothing here. {{ personal.email }}\n")
    ctx = _context(make_context, feed_server, smtp_sink.port, digest='templates = "tpl"')
    with pytest.raises(EditionError, match="failed the pre-flight check"):
        editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp), check_links=False)
    assert smtp_sink.received == []
    with ctx.db.reader() as session:
        assert session.query(Edition).count() == 0


def test_composition_and_rendering_match_the_golden_files(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    golden: Callable[[str, str], None],
) -> None:
    feed_server.routes["/feed"] = Route(SAMPLE_FEED.read_bytes())
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))],
                       digest='sections = ["Middle East", "Europe", "Asia", "Africa"]\n'
                       'per_section = 2\nmax_articles = 12\n[digest.aliases]\n'
                       '"* | Middle East" = "Middle East"\n"* | Europe" = "Europe"\n'
                       '"* | Asia" = "Asia"\n"* | Africa" = "Africa"\n')
    gather(ctx.settings, ctx.db)
    from datetime import date

    from digest.compose import explicit_period

    period = explicit_period(date(2026, 11, 16), date(2026, 11, 22), ctx.settings.timezone)
    prepared = editions.prepare(ctx, period)
    assert prepared is not None
    plan = prepared.plan
    layout = {"lead": plan.lead.title if plan.lead else None,
              "sections": [[s.name, [a.title for a in s.articles]] for s in plan.sections]}
    golden("golden/composition.json", json.dumps(layout, indent=2, ensure_ascii=False) + "\n")
    rendered = render_edition(plan, ctx.settings, ctx.templates,
                              now=datetime(2026, 11, 23, 7, 0, tzinfo=UTC), nonce="golden")
    golden("golden/edition.mjml", rendered.mjml)
    golden("golden/edition.txt", rendered.text)
    golden("golden/edition.html", rendered.html)
