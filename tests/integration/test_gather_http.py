"""Gathering from a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable

from digest.app import Context
from digest.gather.run import gather
from digest.models import Article, Source
from tests.conftest import FeedServer, Route, read_data


def test_gather_stores_articles_and_uses_conditional_get(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    feed_server.routes["/rss"] = Route(read_data("feeds/rss2.xml"), etag='"v1"',
                                       last_modified="Tue, 24 Nov 2026 10:00:00 GMT")
    ctx = make_context(feeds=[("Statecraft", feed_server.url("/rss"))])
    first = gather(ctx.settings, ctx.db)
    assert first.sources[0].status == "ok"
    assert (first.sources[0].new, first.sources[0].skipped) == (4, 1)
    with ctx.db.reader() as session:
        assert session.query(Article).count() == 4
        source = session.query(Source).one()
        assert source.etag == '"v1"'
    second = gather(ctx.settings, ctx.db)
    assert second.sources[0].status == "not_modified"
    _path, headers = feed_server.requests[-1]
    assert headers.get("If-None-Match") == '"v1"'
    assert headers.get("If-Modified-Since") == "Tue, 24 Nov 2026 10:00:00 GMT"
    assert headers.get("User-Agent", "").startswith("digest/")


def test_same_article_in_two_feeds_and_two_runs_is_stored_once(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    feed_server.routes["/a"] = Route(read_data("feeds/rss2.xml"))
    feed_server.routes["/b"] = Route(read_data("feeds/rss2.xml"))
    ctx = make_context(feeds=[("A", feed_server.url("/a")), ("B", feed_server.url("/b"))])
    gather(ctx.settings, ctx.db)
    report = gather(ctx.settings, ctx.db)
    assert report.new == 0
    with ctx.db.reader() as session:
        assert session.query(Article).count() == 4


def test_changed_article_is_updated_in_place(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    body = read_data("feeds/rss2.xml")
    feed_server.routes["/rss"] = Route(body)
    ctx = make_context(feeds=[("S", feed_server.url("/rss"))])
    gather(ctx.settings, ctx.db)
    feed_server.routes["/rss"] = Route(body.replace(b"The Case for Withdrawing",
                                                    b"The Updated Case for Withdrawing"))
    report = gather(ctx.settings, ctx.db)
    assert (report.sources[0].new, report.sources[0].updated) == (0, 1)
    with ctx.db.reader() as session:
        titles = [a.title for a in session.query(Article)]
    assert "The Updated Case for Withdrawing U.S. Troops from Iraq" in titles
    assert len(titles) == 4


def test_one_failing_source_does_not_stop_the_others(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    feed_server.routes["/good"] = Route(read_data("feeds/atom.xml"),
                                        content_type="application/atom+xml")
    feed_server.routes["/html"] = Route(b"<html><body>Hello</body></html>",
                                        content_type="text/html")
    ctx = make_context(feeds=[
        ("Good", feed_server.url("/good")),
        ("Missing", feed_server.url("/nope")),
        ("Web page", feed_server.url("/html")),
    ])
    report = gather(ctx.settings, ctx.db)
    by_name = {s.name: s for s in report.sources}
    assert by_name["Good"].new == 2
    assert by_name["Missing"].failed and "404" in (by_name["Missing"].error or "")
    assert by_name["Web page"].failed and "not an RSS or Atom feed" in (
        by_name["Web page"].error or "")
    with ctx.db.reader() as session:
        stored = {s.name: (s.status, s.error) for s in session.query(Source)}
    assert stored["Missing"][0] == "error" and "404" in (stored["Missing"][1] or "")
    assert stored["Good"] == ("ok", None)
