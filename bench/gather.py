"""Gather 100 feeds served locally, each answering after 200 ms.

Prints the time to gather one feed, the time to gather all of them (and the ratio:
serial fetching would be ~100x, a concurrency of 8 should give ~13x), and the peak
memory of the run. The feeds are served by a separate process so the server's work
does not share this process's interpreter.

    .venv/bin/python bench/gather.py [--feeds 100] [--delay 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from digest.app import Context
from digest.config import load_config
from digest.deliver.sink import free_port
from digest.gather.run import gather


def feed_body(n: int, items: int = 20) -> bytes:
    """A realistic RSS 2.0 feed of ``items`` items (~1.5 KB each)."""
    now = datetime.now(UTC)
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
             f'xmlns:dc="http://purl.org/dc/elements/1.1/" '
             f'xmlns:media="http://search.yahoo.com/mrss/"><channel><title>Feed {n}</title>'
             f"<link>https://feed{n}.example/</link><description>d</description>"]
    for i in range(items):
        when = format_datetime(now - timedelta(hours=i * 3))
        parts.append(
            f"<item><title>Story {i} of feed {n}: a headline of ordinary length</title>"
            f"<link>https://feed{n}.example/2026/{i}/story/?utm_source=rss</link>"
            f'<guid isPermaLink="false">f{n}-{i}</guid><dc:creator>Author {i}</dc:creator>'
            f"<category>Analysis | Region {i % 5}</category><pubDate>{when}</pubDate>"
            f"<description><![CDATA[<p>{'A dek sentence with some words. ' * 12}</p>"
            f"<script>x()</script>]]></description>"
            f'<media:content url="https://cdn.feed{n}.example/{i}.jpg" medium="image">'
            f"<media:credit>Photo: Agency {i}</media:credit></media:content></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def serve(port: int, delay: float, ready: Any) -> None:
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            body = bodies.setdefault(self.path, feed_body(int(self.path.rsplit("/", 1)[1])))
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    ready.set()
    server.serve_forever()


def config(folder: Path, port: int, feeds: int, concurrency: int) -> Path:
    sources = "".join(
        f'[[sources]]\nname = "Feed {n}"\nurl = "http://127.0.0.1:{port}/feed/{n}"\n\n'
        for n in range(feeds)
    )
    path = folder / "config.toml"
    path.write_text(
        '[publication]\nname = "Bench"\nurl = "https://bench.example/"\n'
        'from_address = "d@bench.example"\npostal_address = "1 Street"\n\n'
        f'[database]\nurl = "sqlite:///{folder / "bench.db"}"\n\n{sources}'
        f"[gather]\nconcurrency = {concurrency}\n"
    )
    return path


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def timed_gather(folder: Path, port: int, feeds: int, concurrency: int) -> tuple[float, int, int]:
    """(seconds, new articles, peak resident memory in KB) of one gather run."""
    folder.mkdir(parents=True)
    ctx = Context(load_config(config(folder, port, feeds, concurrency)))
    ctx.db  # noqa: B018 - migrate before the clock starts
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    started = time.perf_counter()
    report = gather(ctx.settings, ctx.db)
    elapsed = time.perf_counter() - started
    peak = _rss_kb("VmHWM")
    ctx.close()
    assert not report.failed, [s.error for s in report.failed]
    return elapsed, report.new, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, args.delay, ready), daemon=True)
    server.start()
    ready.wait(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one, one_new, one_peak = timed_gather(Path(tmp) / "one", port, 1, args.concurrency)
            many, many_new, peak = timed_gather(Path(tmp) / "many", port, args.feeds,
                                                args.concurrency)
    finally:
        server.terminate()
    print(f"server delay {args.delay * 1000:.0f} ms per response, concurrency {args.concurrency}")
    print(f"1 feed:      {one:6.2f} s  ({one_new} articles)")
    print(f"{args.feeds} feeds:  {many:6.2f} s  ({many_new} articles)  = {many / one:5.1f}x one "
          f"feed (serial would be ~{args.feeds}x; ideal at this concurrency "
          f"~{args.feeds / args.concurrency:.1f}x)")
    print(f"peak RSS: {one_peak / 1024:.0f} MB gathering 1 feed, {peak / 1024:.0f} MB gathering "
          f"{args.feeds} ({peak / one_peak:.2f}x)")


if __name__ == "__main__":
    main()
