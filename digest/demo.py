"""`digest demo`: the whole flow on this machine, with no network beyond loopback.

It serves the bundled sample feed over HTTP on a loopback port (with its dates
moved so that the newest article is two hours old), gathers it into a fresh
SQLite file, adds three demo subscribers, writes the preview, and sends the
edition to the built-in SMTP sink, which keeps one .eml file per message.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import editions, subscribers
from .app import Context
from .compose import weekly_period
from .config import Settings, SourceConfig, load_config
from .deliver.sink import SmtpSink, free_port
from .deliver.smtp import SMTPTransport
from .gather.run import GatherReport, gather
from .sample import SAMPLE_FEED, init

# Only for the demo: everywhere else the secret must come from the environment.
DEMO_SECRET = "demo-secret-for-digest-demo-only-never-in-production"  # noqa: S105
DEMO_SUBSCRIBERS = (
    ("ada.reader@example.org", "Ada Reader"),
    ("ben.okafor@example.net", "Ben Okafor"),
    ("chloe.martin@example.com", "Chloé Martin"),
)


@dataclass(frozen=True)
class DemoReport:
    """Where the demo put everything."""

    folder: Path
    outbox: Path
    preview: editions.PreviewFiles | None
    gathered: GatherReport
    send: editions.SendOutcome
    messages: int


def shifted_feed(body: bytes, now: datetime) -> bytes:
    """The sample feed with every pubDate moved so the newest is two hours before ``now``."""
    text = body.decode("utf-8")
    stamps = [parsedate_to_datetime(m) for m in re.findall(r"<pubDate>(.*?)</pubDate>", text)]
    if not stamps:
        return body
    delta = (now - timedelta(hours=2)) - max(stamps)

    def move(match: re.Match[str]) -> str:
        moved = parsedate_to_datetime(match.group(1)) + delta
        return f"<pubDate>{format_datetime(moved.astimezone(UTC))}</pubDate>"

    return re.sub(r"<pubDate>(.*?)</pubDate>", move, text).encode("utf-8")


class _FeedServer:
    """A loopback HTTP server answering every GET with the (shifted) sample feed."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_settings(folder: Path, feed_url: str, smtp_port: int) -> Settings:
    """The configuration `digest init` wrote into ``folder``, pointed at the demo's feed
    server and SMTP sink, with the demo's built-in secret."""
    settings = load_config(folder / "config.toml")
    return replace(
        settings,
        sources=(SourceConfig(name=settings.sources[0].name, url=feed_url),),
        smtp=replace(settings.smtp, host="127.0.0.1", port=smtp_port),
        builtin_secret=DEMO_SECRET,
    )


def run_demo(folder: Path, say: Callable[[str], None] = print) -> DemoReport:
    """Run gather → preview → send on a fresh demo database and sink."""
    folder = folder.resolve()
    for stale in ("digest.db", "digest.db-wal", "digest.db-shm"):
        (folder / stale).unlink(missing_ok=True)
    for sub in ("outbox", "preview"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    now = datetime.now(UTC)
    feed_body = shifted_feed(SAMPLE_FEED.read_bytes(), now)
    # A ready-to-play-with setup: afterwards `digest --config demo-output/config.toml …`
    # works offline against the same (date-shifted) feed file.
    init(folder, force=True)
    (folder / "sample-feed.xml").write_bytes(feed_body)
    outbox = folder / "outbox"
    with SmtpSink(outbox) as sink, _FeedServer(feed_body) as feed:
        settings = demo_settings(folder, feed.url, sink.port)
        ctx = Context(settings)
        try:
            say(f"Gathering the sample feed from {feed.url} …")
            gathered = gather(settings, ctx.db)
            for source in gathered.sources:
                say(f"  {source.name}: {source.new} new articles")
            for email, name in DEMO_SUBSCRIBERS:
                subscribers.add(ctx.db, email, name=name, now=ctx.now())
            say(f"Added {len(DEMO_SUBSCRIBERS)} demo subscribers.")
            period = weekly_period(ctx.now(), settings.timezone, settings.digest.window_days)
            files = editions.preview(ctx, period, folder / "preview")
            transport = SMTPTransport(settings.smtp)
            say(f"Sending edition {period.key} to the built-in SMTP sink on "
                f"127.0.0.1:{sink.port} …")
            # No network here: the sample's article links point at a fictional site.
            outcome = editions.send(ctx, period, transport, check_links=False)
        finally:
            ctx.close()
        messages = len(sink.received)
    return DemoReport(folder, outbox, files, gathered, outcome, messages)
