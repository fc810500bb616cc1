"""Editors' controls through the real command: articles add/pin/exclude/include, sources."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.demo import shifted_feed
from digest.sample import SAMPLE_FEED
from tests.conftest import SECRET, FeedServer, Route, config_text, read_data, run_digest

ENV = {"DIGEST_SECRET_KEY": SECRET}


@pytest.fixture
def site(tmp_path: Path, feed_server: FeedServer) -> Path:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    feed_server.routes["/page"] = Route(read_data("pages/jsonld.html"),
                                        content_type="text/html; charset=utf-8")
    (tmp_path / "config.toml").write_text(config_text(
        feeds=[("Meridian", feed_server.url("/feed")), ("Gone", feed_server.url("/missing"))],
        digest='sections = ["Middle East", "Europe", "Asia", "Africa"]\n'
               '[digest.aliases]\n"* | Middle East" = "Middle East"\n"* | Europe" = "Europe"\n'
               '"* | Asia" = "Asia"\n"* | Africa" = "Africa"\n'))
    return tmp_path


def _lead_title(site: Path) -> str:
    shown = run_digest("preview", "--out", "pv", cwd=site, env=ENV)
    assert shown.code == 0, shown.err
    lines = (site / "pv" / "digest.txt").read_text().splitlines()
    return lines[lines.index(next(x for x in lines if x.startswith("LEAD STORY"))) + 2]


def test_gather_names_the_failing_source_and_exits_1(site: Path) -> None:
    ran = run_digest("gather", cwd=site)
    assert ran.code == 1
    assert "Gone: FAILED: HTTP 404" in ran.out and "Meridian: 15 new" in ran.out
    listed = run_digest("sources", "list", "--json", cwd=site)
    sources = {s["name"]: s for s in map(json.loads, listed.out.splitlines())}
    assert sources["Meridian"]["articles"] == 15 and sources["Meridian"]["status"] == "ok"
    assert sources["Gone"]["status"] == "error" and "404" in sources["Gone"]["error"]
    assert sources["Gone"]["fetched_at"]
    text = run_digest("sources", "list", cwd=site).out
    assert "error: HTTP 404" in text and "15 articles" in text


def test_add_pin_exclude_include(site: Path, feed_server: FeedServer) -> None:
    run_digest("gather", cwd=site)
    page = feed_server.url("/page")
    added = run_digest("articles", "add", page, "--section", "Africa", "--note", "from X",
                       cwd=site)
    assert added.code == 0, added.err
    assert "new: Sudan's bloody war is immune to the art of the deal" in added.out
    records = [json.loads(x) for x in run_digest("articles", "--json", cwd=site).out.splitlines()]
    mine = next(r for r in records if r["url"] == page)
    assert mine["note"] == "from X" and mine["section"] == "Africa" and mine["source"] is None
    assert mine["image"] == "https://cdn.statecraft.example/sudan.jpg"

    assert _lead_title(site) != "Sudan's bloody war is immune to the art of the deal"
    assert run_digest("articles", "pin", page, cwd=site).code == 0
    assert _lead_title(site) == "Sudan's bloody war is immune to the art of the deal"

    victim = "https://meridian-review.example/yemen-forgotten-ports/?utm_source=x"
    assert run_digest("articles", "exclude", victim, cwd=site).code == 0
    run_digest("preview", "--out", "pv", cwd=site, env=ENV)
    assert "Yemen's forgotten ports" not in (site / "pv" / "digest.txt").read_text()
    assert run_digest("articles", "include", victim, cwd=site).code == 0
    run_digest("preview", "--out", "pv", cwd=site, env=ENV)
    assert "Yemen's forgotten ports" in (site / "pv" / "digest.txt").read_text()

    unknown = run_digest("articles", "pin", "https://nowhere.example/x", cwd=site)
    assert unknown.code == 1 and "no article with the URL" in unknown.err
    unreadable = run_digest("articles", "add", feed_server.url("/nope"), cwd=site)
    assert unreadable.code == 1 and "HTTP 404" in unreadable.err
    assert "Traceback" not in unknown.err + unreadable.err


def test_sources_import_and_export(site: Path) -> None:
    (site / "feeds.opml").write_text(
        '<?xml version="1.0"?><opml version="2.0"><body>'
        '<outline text="New One" xmlUrl="https://new.example/rss"/></body></opml>')
    ran = run_digest("sources", "import", "feeds.opml", cwd=site)
    assert ran.code == 0 and "added New One: https://new.example/rss" in ran.out
    exported = run_digest("sources", "export", cwd=site)
    assert exported.code == 0
    assert 'xmlUrl="https://new.example/rss"' in exported.out
    assert exported.out.count("<outline") == 3
