"""Gathering from a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable

from digest.app import Context
from digest.gather.run import gather
from digest.models import Article, Source
from tests.conftest import FeedServer, Route, config_text, read_data


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
    assert by_name["Web page"].failed and "an HTML page" in (
        by_name["Web page"].error or "")
    with ctx.db.reader() as session:
        stored = {s.name: (s.status, s.error) for s in session.query(Source)}
    assert stored["Missing"][0] == "error" and "404" in (stored["Missing"][1] or "")
    assert stored["Good"] == ("ok", None)


def _one(ctx: Context) -> object:
    return gather(ctx.settings, ctx.db).sources[0]


FAST = "[gather]\ntimeout = 1.0\nmax_body_mb = 0.2\n"


def test_redirects_are_followed_up_to_five(feed_server: FeedServer,
                                           make_context: Callable[..., Context]) -> None:
    feed_server.routes["/old"] = Route(status=301, location="/new")
    feed_server.routes["/new"] = Route(read_data("feeds/atom.xml"))
    for i in range(7):
        feed_server.routes[f"/loop{i}"] = Route(status=302, location=f"/loop{i + 1}")
    ctx = make_context(feeds=[("Moved", feed_server.url("/old")),
                              ("Loop", feed_server.url("/loop0"))])
    report = {s.name: s for s in gather(ctx.settings, ctx.db).sources}
    assert report["Moved"].new == 2
    assert report["Loop"].failed and "more than 5 redirects" in (report["Loop"].error or "")


def test_slow_source_times_out_and_the_others_are_kept(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    feed_server.routes["/slow"] = Route(read_data("feeds/rss2.xml"), delay=3.0)
    feed_server.routes["/fast"] = Route(read_data("feeds/atom.xml"))
    ctx = make_context(feeds=[("Slow", feed_server.url("/slow")),
                              ("Fast", feed_server.url("/fast"))], extra=FAST)
    report = {s.name: s for s in gather(ctx.settings, ctx.db).sources}
    assert report["Slow"].failed and "timed out after 1 s" in (report["Slow"].error or "")
    assert report["Fast"].new == 2


def test_per_source_timeout_overrides_the_default(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    feed_server.routes["/slowish"] = Route(read_data("feeds/atom.xml"), delay=1.5)
    url = feed_server.url("/slowish")
    assert _one(make_context(feeds=[("S", url)], extra=FAST)).failed  # type: ignore[attr-defined]
    patient = make_context(feeds=[("S", url)], extra=FAST,
                           ).settings.path.read_text().replace(f'url = "{url}"',
                                                               f'url = "{url}"\ntimeout = 5')
    assert _one(make_context(text=patient)).new == 2  # type: ignore[attr-defined]


def test_endless_body_is_cut_off_at_the_cap(feed_server: FeedServer,
                                            make_context: Callable[..., Context]) -> None:
    feed_server.routes["/endless"] = Route(endless=True)
    feed_server.routes["/big"] = Route(b"<rss>" + b"x" * 400_000 + b"</rss>")
    ctx = make_context(feeds=[("Endless", feed_server.url("/endless")),
                              ("Big", feed_server.url("/big"))], extra=FAST)
    report = {s.name: s for s in gather(ctx.settings, ctx.db).sources}
    for name in ("Endless", "Big"):
        assert report[name].failed and "larger than 204 KB" in (report[name].error or "")


def test_invalid_content_and_tls_errors_are_named(feed_server: FeedServer,
                                                  make_context: Callable[..., Context]) -> None:
    feed_server.routes["/json"] = Route(b'{"version": "https://jsonfeed.org/version/1.1", '
                                        b'"items": [', content_type="application/json")
    feed_server.routes["/xml"] = Route(b"<?xml version='1.0'?><not-a-feed><x/></not-a-feed>")
    tls_url = feed_server.url("/xml").replace("http://", "https://")
    ctx = make_context(feeds=[("Broken JSON", feed_server.url("/json")),
                              ("Other XML", feed_server.url("/xml")),
                              ("TLS", tls_url)], extra=FAST)
    report = {s.name: s for s in gather(ctx.settings, ctx.db).sources}
    assert "invalid JSON at line 1" in (report["Broken JSON"].error or "")
    assert "not an RSS, Atom or JSON feed" in (report["Other XML"].error or "")
    assert "TLS error" in (report["TLS"].error or "")


def test_concurrency_is_limited(feed_server: FeedServer,
                                make_context: Callable[..., Context]) -> None:
    feeds = []
    for i in range(9):
        feed_server.routes[f"/f{i}"] = Route(read_data("feeds/atom.xml"), delay=0.3)
        feeds.append((f"F{i}", feed_server.url(f"/f{i}")))
    ctx = make_context(feeds=feeds, extra="[gather]\nconcurrency = 3\n")
    report = gather(ctx.settings, ctx.db)
    assert not report.failed
    assert 2 <= feed_server.max_in_flight <= 3


def test_a_changed_link_with_the_same_guid_is_the_same_article(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    body = read_data("feeds/rss2.xml")
    feed_server.routes["/rss"] = Route(body)
    ctx = make_context(feeds=[("S", feed_server.url("/rss"))])
    gather(ctx.settings, ctx.db)
    feed_server.routes["/rss"] = Route(body.replace(b"2026/11/iraq-withdrawal/",
                                                    b"2026/11/iraq-withdrawal-updated/"))
    report = gather(ctx.settings, ctx.db)
    assert report.new == 0
    with ctx.db.reader() as session:
        urls = sorted(a.url for a in session.query(Article))
    assert "https://statecraft.example/2026/11/iraq-withdrawal-updated/?ref=home" in urls
    assert len(urls) == 4


def test_fragment_identity_sticks_to_a_source_across_runs(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    body = read_data("feeds/daily-fragments.xml")
    feed_server.routes["/daily"] = Route(body)
    ctx = make_context(feeds=[("Daily", feed_server.url("/daily"))])
    assert gather(ctx.settings, ctx.db).new == 3
    only_last = body.split(b"<item>")
    feed_server.routes["/daily"] = Route(only_last[0] + b"<item>" + only_last[3])
    assert gather(ctx.settings, ctx.db).new == 0
    with ctx.db.reader() as session:
        assert session.query(Article).count() == 3


ENRICH_FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<item><title>Needs a picture</title><link>/story-1</link>
<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>
<item><title>Elsewhere</title><link>http://localhost:PORT/story-2</link><description>x</description></item>
<item><title>Complete</title><link>/story-3</link><description>Has a dek.</description>
<enclosure url="https://cdn.example/i.jpg" type="image/jpeg" length="1"/></item>
</channel></rss>"""


def test_enrichment_reads_pages_of_items_that_lack_an_image_or_dek(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    port = feed_server.base.rsplit(":", 1)[1]
    feed_server.routes["/feed"] = Route(ENRICH_FEED.replace(b"PORT", port.encode()))
    feed_server.routes["/story-1"] = Route(read_data("pages/opengraph.html"),
                                           content_type="text/html; charset=utf-8")
    feed_server.routes["/story-2"] = Route(read_data("pages/opengraph.html"),
                                           content_type="text/html")
    feed_server.routes["/story-3"] = Route(read_data("pages/opengraph.html"))
    text = config_text(feeds=[("E", feed_server.url("/feed"))]).replace(
        'name = "E"', 'name = "E"\nenrich = true')
    ctx = make_context(text=text)
    report = gather(ctx.settings, ctx.db).sources[0]
    assert report.enriched == 1
    paths = [p for p, _ in feed_server.requests]
    assert "/story-1" in paths
    assert "/story-2" not in paths  # another host name: a feed may not steer us there
    assert "/story-3" not in paths  # nothing missing: no page fetched
    with ctx.db.reader() as session:
        story = session.query(Article).filter(Article.title == "Needs a picture").one()
        assert story.image_url == f"{feed_server.base}/wp-content/uploads/convoy-scaled.jpg"
        assert story.summary_text.startswith("And as long as")
        assert story.author == "Jane Roe" and story.category == "Middle East"


def test_a_feed_cannot_steer_enrichment_into_an_internal_address(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    internal = FeedServer()  # another port on loopback: not the source's, not public
    try:
        internal.routes["/admin"] = Route(b"<html>secret</html>", content_type="text/html")
        port = feed_server.base.rsplit(":", 1)[1]
        feed_server.routes["/feed"] = Route(ENRICH_FEED.replace(b"PORT", port.encode()))
        # The page on the source's own host redirects to the internal one.
        feed_server.routes["/story-1"] = Route(status=302, location=internal.url("/admin"))
        text = config_text(feeds=[("E", feed_server.url("/feed"))]).replace(
            'name = "E"', 'name = "E"\nenrich = true')
        ctx = make_context(text=text)
        report = gather(ctx.settings, ctx.db).sources[0]
        assert report.enriched == 0
        assert internal.requests == []
    finally:
        internal.close()
