"""The editors' preview in the web app, over a real HTTP server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from digest.app import Context
from digest.demo import shifted_feed
from digest.gather.run import gather
from digest.sample import SAMPLE_FEED
from digest.web import create_app
from tests.conftest import FeedServer, Route, WebServer


def _ready(make_context: Callable[..., Context], feed_server: FeedServer,
           tmp_path: Path) -> Context:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    templates = tmp_path / "tpl"
    templates.mkdir()
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))],
                       digest='templates = "tpl"\nintro_file = "intro.md"')
    gather(ctx.settings, ctx.db)
    return ctx


def test_preview_shows_both_widths_the_text_and_the_headers(
    make_context: Callable[..., Context], feed_server: FeedServer,
    web_server: Callable[[Context], WebServer], tmp_path: Path,
) -> None:
    ctx = _ready(make_context, feed_server, tmp_path)
    server = web_server(ctx)
    page = httpx.get(server.url("/preview")).text
    assert 'width="600"' in page and 'width="375"' in page
    assert "The Test Review: The Case for Withdrawing U.S. Troops from Iraq" in page
    assert "List-Unsubscribe" in page and "THE TEST REVIEW" in page
    edition = httpx.get(server.url("/preview/html")).text
    assert edition.startswith("<!doctype html>")
    assert "reader@example.com" in edition  # a sample reader, never a subscriber's address
    assert "%%digest" not in edition


def test_preview_reloads_when_templates_or_intro_change(
    make_context: Callable[..., Context], feed_server: FeedServer,
    web_server: Callable[[Context], WebServer], tmp_path: Path,
) -> None:
    ctx = _ready(make_context, feed_server, tmp_path)
    server = web_server(ctx)

    def version() -> str:
        return str(httpx.get(server.url("/preview/version")).json()["version"])

    first = version()
    assert version() == first
    (tmp_path / "intro.md").write_text("Hello *readers*.")
    second = version()
    assert second != first
    assert "<em>readers</em>" in httpx.get(server.url("/preview/html")).text
    partial = tmp_path / "tpl" / "footer.txt"
    partial.write_text("x")
    later = time.time() + 5
    os.utime(partial, (later, later))
    assert version() != second


def test_preview_is_only_for_this_machine(make_context: Callable[..., Context],
                                          feed_server: FeedServer, tmp_path: Path) -> None:
    ctx = _ready(make_context, feed_server, tmp_path)
    app = create_app(ctx)

    async def status(client: str, path: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://digest") as http:
            return (await http.get(path)).status_code

    assert asyncio.run(status("203.0.113.7", "/preview")) == 404
    assert asyncio.run(status("203.0.113.7", "/preview/html")) == 404
    assert asyncio.run(status("127.0.0.1", "/preview")) == 200
