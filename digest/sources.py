"""Sources as editors manage them: list with their health, import and export OPML.

config.toml stays the one place sources are defined: an OPML import appends
``[[sources]]`` tables to it (after checking that the result is a valid config),
leaving every comment and key as it was.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

from .config import Settings, SourceConfig, parse_config
from .db import Database
from .errors import ConfigError, DigestError
from .gather.clean import canonical_url, is_web_url
from .queries import sources as queries


def list_sources(settings: Settings, db: Database) -> Sequence[queries.SourceSummary]:
    """Every source with its last fetch, status, error and article count."""
    with db.session() as session:
        queries.sync_sources(session, settings.sources)
        return queries.list_sources(session, (s.name for s in settings.sources))


@dataclass
class OpmlImport:
    """What an OPML import added to config.toml, and what it left out and why."""

    added: list[SourceConfig] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_opml(path: Path) -> list[tuple[str, str]]:
    """(title, feed URL) of every outline with an xmlUrl, in document order."""
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - expat refuses entity expansion bombs
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise DigestError(f"{path}: not valid OPML (XML error at line {exc.position[0]}): "
                          f"{exc}") from None
    if root.tag.lower() != "opml":
        raise DigestError(f"{path}: not OPML (the root element is <{root.tag}>)")
    found = []
    for outline in root.iter("outline"):
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if url:
            title = (outline.get("title") or outline.get("text") or url).strip()
            found.append((" ".join(title.split()), url))
    return found


def import_opml(settings: Settings, path: Path) -> OpmlImport:
    """Append the feeds of an OPML file to config.toml as [[sources]] tables."""
    report = OpmlImport()
    names = {s.name.casefold() for s in settings.sources}
    urls = {canonical_url(s.url) for s in settings.sources}
    for title, url in read_opml(path):
        if not is_web_url(url):
            report.skipped.append((title, f"{url!r} is not an http(s) URL"))
            continue
        if canonical_url(url) in urls:
            report.skipped.append((title, "already a source (same URL)"))
            continue
        name, n = title, 2
        while name.casefold() in names:
            name, n = f"{title} ({n})", n + 1
        names.add(name.casefold())
        urls.add(canonical_url(url))
        report.added.append(SourceConfig(name=name, url=url))
    if report.added:
        text = settings.path.read_text(encoding="utf-8")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        block = [f"\n# Imported from {path.name} on {stamp}."]
        for source in report.added:
            block.append(f"[[sources]]\nname = {_toml_string(source.name)}\n"
                         f"url = {_toml_string(source.url)}")
        new_text = text.rstrip("\n") + "\n" + "\n\n".join(block) + "\n"
        try:
            parse_config(new_text, settings.path)
        except ConfigError as exc:
            raise DigestError(f"importing {path} would make the config invalid: {exc}; "
                              "nothing was written") from None
        settings.path.write_text(new_text, encoding="utf-8")
    return report


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def export_opml(settings: Settings) -> str:
    """The configured sources as an OPML 2.0 document."""
    title = html.escape(settings.publication.name, quote=False)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{title} sources</title></head>",
        "  <body>",
    ]
    for source in settings.sources:
        if is_web_url(source.url):
            lines.append(f"    <outline type=\"rss\" text={quoteattr(source.name)} "
                         f"title={quoteattr(source.name)} xmlUrl={quoteattr(source.url)}/>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)
