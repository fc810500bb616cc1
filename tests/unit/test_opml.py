"""OPML import into config.toml, and export."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import load_config
from digest.errors import DigestError
from digest.sources import export_opml, import_opml, read_opml
from tests.conftest import config_text

OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0"><head><title>Feeds</title></head><body>
  <outline text="Foreign Affairs">
    <outline type="rss" text="Statecraft" title="Statecraft Weekly" xmlUrl="https://statecraft.example/feed/"/>
    <outline type="rss" text="Already here" xmlUrl="https://a.example/feed?utm_source=x"/>
    <outline type="rss" text="Dup &amp; name" xmlUrl="https://dup.example/feed"/>
  </outline>
  <outline type="rss" text="Bad" xmlUrl="ftp://nope.example/feed"/>
  <outline type="rss" text="A" xmlUrl="https://other.example/rss"/>
</body></opml>
"""


def test_read_opml_finds_nested_outlines(tmp_path: Path) -> None:
    path = tmp_path / "f.opml"
    path.write_text(OPML)
    assert read_opml(path)[0] == ("Statecraft Weekly", "https://statecraft.example/feed/")
    assert len(read_opml(path)) == 5


def test_import_appends_sources_and_keeps_the_file_valid(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("# my comment\n" + config_text(feeds=[("A", "https://a.example/feed")]))
    opml = tmp_path / "f.opml"
    opml.write_text(OPML)
    report = import_opml(load_config(cfg), opml)
    assert [s.name for s in report.added] == ["Statecraft Weekly", "Dup & name", "A (2)"]
    assert {r for _, r in report.skipped} == {"already a source (same URL)",
                                              "'ftp://nope.example/feed' is not an http(s) URL"}
    text = cfg.read_text()
    assert text.startswith("# my comment\n")
    reloaded = load_config(cfg)
    assert [s.name for s in reloaded.sources] == ["A", "Statecraft Weekly", "Dup & name", "A (2)"]
    again = import_opml(reloaded, opml)
    assert again.added == []


def test_export_round_trips(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(feeds=[("A & B", "https://a.example/feed?x=1&y=2"),
                                      ("C", "https://c.example/rss")]))
    out = tmp_path / "out.opml"
    out.write_text(export_opml(load_config(cfg)))
    assert read_opml(out) == [("A & B", "https://a.example/feed?x=1&y=2"),
                              ("C", "https://c.example/rss")]


@pytest.mark.parametrize("content", ["<html/>", "not xml at all <", ""])
def test_bad_opml_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "f.opml"
    path.write_text(content)
    with pytest.raises(DigestError, match=r"f\.opml"):
        read_opml(path)
