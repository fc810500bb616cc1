"""Send the demo edition to 10k and 100k (and, with --full, 1M) subscribers through
Postfix's smtp-sink on loopback, and compare with smtp-source in the same run.

Prints, for each list size: digest's messages per second (and as a fraction of what
smtp-source reaches against the same sink with the same message size and sessions),
the enqueue time, the peak RSS of the `digest send` process; and the messages built
per second by substitution alone. Needs Debian's postfix package (only its test
programs run; no mail daemon is started).

    .venv/bin/python bench/send.py [--full] [--connections 8] [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    args = [SINK]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    sink = subprocess.Popen([*args, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start")


def digest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_SECRET_KEY"] = SECRET
    return subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def prepare_site(folder: Path, port: int, connections: int) -> int:
    """A site with the sample feed gathered; returns the size of one message in bytes."""
    from digest.demo import shifted_feed
    from digest.sample import SAMPLE_FEED, sample_config

    folder.mkdir(parents=True)
    (folder / "feed.xml").write_bytes(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    config = sample_config("feed.xml").replace('templates = "email_templates"', "")
    config = config.replace('intro_file = "intro.md"', "")
    config = config.replace("port = 1025", f"port = {port}").replace(
        "max_connections = 4", f"max_connections = {connections}")
    (folder / "config.toml").write_text(config)
    ran = digest("gather", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    digest("subscribers", "add", "sample@example.org", cwd=folder)
    shown = digest("preview", "--out", "preview", cwd=folder)
    assert shown.returncode == 0, shown.stderr
    size = (folder / "preview" / "digest.eml").stat().st_size
    digest("subscribers", "remove", "sample@example.org", cwd=folder)
    return size


def add_subscribers(folder: Path, count: int) -> None:
    db = sqlite3.connect(folder / "digest.db")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    rows = ((f"reader{i}@example.org", f"reader{i}@example.org", "confirmed", "import", "{}",
             "[]", "{}", 0, 0, now, now) for i in range(count))
    db.executemany(
        "INSERT INTO subscribers (email, email_key, status, origin, attributes, "
        "excluded_sections, consent, bounce_count, soft_bounces, created_at, confirmed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def timed_send(folder: Path) -> tuple[dict[str, object], float, int]:
    """Run `digest send --json` as its own process: (report, seconds, peak RSS in KB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_SECRET_KEY"] = SECRET
    out = folder / "send.json"
    started = time.monotonic()
    with out.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "send", "--json", "--skip-link-check"],
            cwd=folder, env=env, stdout=handle, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"digest send failed: {process.stderr.read() if process.stderr else ''}")
    return json.loads(out.read_text()), elapsed, usage.ru_maxrss


def smtp_source_rate(port: int, size: int, sessions: int, messages: int) -> float:
    started = time.monotonic()
    subprocess.run([SOURCE, "-s", str(sessions), "-l", str(size), "-m", str(messages),
                    "-f", "bench@example.org", "-t", "reader@example.org",
                    f"127.0.0.1:{port}"], check=True, capture_output=True)
    return messages / (time.monotonic() - started)


def build_rate(folder: Path, count: int = 20_000) -> float:
    """Messages built per second by substitution alone (no SMTP, no database)."""
    from digest.app import Context
    from digest.config import load_config

    ctx = Context(load_config(folder / "config.toml").with_environ(
        {"DIGEST_SECRET_KEY": SECRET}))
    from digest import editions
    from digest.compose import weekly_period

    period = weekly_period(ctx.now(), ctx.settings.timezone, 30)
    with ctx.db.reader() as session:
        from digest.queries.editions import list_editions

        row = list_editions(session, 1)[0]
        rendered = editions.stored_rendering(row)
    del period
    template = ctx.message_template(rendered)
    recipients = [ctx.recipient(i, f"reader{i}@example.org", f"reader{i}@example.org", None,
                                rendered.nonce, row.id) for i in range(2000)]
    when = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(count):
        template.build(recipients[i % len(recipients)], date=when)
    ctx.close()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 1,000,000 subscribers")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not (Path(SINK).exists() and Path(SOURCE).exists()):
        raise SystemExit("needs Postfix's smtp-sink and smtp-source (Debian package postfix)")
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.full else [])
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "base"
            size = prepare_site(base, port, args.connections)
            print(f"edition: {size / 1024:.0f} KB per message; {args.connections} connections "
                  f"into smtp-sink on 127.0.0.1:{port}")
            reference = smtp_source_rate(port, size, args.connections, 20_000)
            print(f"smtp-source: {reference:,.0f} messages/s (same sink, size and sessions)")
            for count in sizes:
                folder = Path(tmp) / f"n{count}"
                shutil.copytree(base, folder, ignore=shutil.ignore_patterns("*.lock"))
                add_subscribers(folder, count)
                report, elapsed, rss = timed_send(folder)
                sent = int(report["sent"])  # type: ignore[call-overload]
                seconds = float(report["seconds"])  # type: ignore[arg-type]
                rate = sent / seconds
                print(f"{count:>9,} subscribers: sent {sent:,} in {seconds:.1f} s = "
                      f"{rate:,.0f}/s = {rate / reference:.2f} x smtp-source; enqueue "
                      f"{report['enqueue_seconds']:.2f} s; peak RSS {rss / 1024:.0f} MB; "
                      f"max unrecorded {report['max_unrecorded']}; process {elapsed:.1f} s")
                if count == sizes[0]:
                    print(f"messages built per second (substitution only): "
                          f"{build_rate(folder):,.0f}")
                shutil.rmtree(folder)
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
