"""Several `digest worker` processes on one PostgreSQL database.

Against an SMTP server that answers each message after 20 ms (aiosmtpd, in its own
process), sends one edition to N subscribers with 1 sending process and with 3, and
prints the speed-up; then runs 3 processes again and kills one with SIGKILL midway,
and prints that every subscriber was served (and how many got a second copy, which
carries the same Message-ID).

    .venv/bin/python bench/workers.py [--subscribers 600] [--connections 2]

Needs the PostgreSQL server on 127.0.0.1:5432 (user postgres, database test).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-0123456789abcdef"


def sink_process(port: int, delay: float, counts: Any, ready: Any) -> None:
    """An SMTP server answering each message after ``delay``; counts per recipient."""
    from digest.deliver.sink import SmtpSink

    def answer(envelope: Any) -> None:
        counts.put((envelope.rcpt_tos[0], time.time()))
        return None

    with SmtpSink(port=port, delay=delay, data_reply=answer):
        ready.set()
        while True:
            time.sleep(3600)


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return {**base, "DIGEST_SECRET_KEY": SECRET}


def site(folder: Path, schema: str, port: int, people: int, connections: int) -> None:
    from digest.demo import shifted_feed
    from digest.sample import SAMPLE_FEED

    folder.mkdir(parents=True)
    (folder / "feed.xml").write_bytes(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    (folder / "config.toml").write_text(f"""
[publication]
name = "Bench"
url = "https://bench.example/"
from_address = "digest@bench.example"
postal_address = "1 Street"
[database]
url = "{PG}?options=-csearch_path%3D{schema}"
[[sources]]
name = "Sample"
url = "feed.xml"
[smtp]
host = "127.0.0.1"
port = {port}
max_connections = {connections}
lease_seconds = 5
""")
    (folder / "list.csv").write_text(
        "email\n" + "".join(f"r{i:05d}@example.org\n" for i in range(people)))
    for args in (["gather"], ["subscribers", "import", "list.csv"]):
        subprocess.run([sys.executable, "-m", "digest", *args], cwd=folder, env=env(),
                       check=True, capture_output=True)


TIMES: list[float] = []


def drain(counts: Any) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    while not counts.empty():
        rcpt, at = counts.get()
        found[rcpt] += 1
        TIMES.append(at)
    return found


def run(folder: Path, workers: int, kill_after: int | None, counts: Any,
        people: int) -> tuple[float, collections.Counter[str]]:
    """(seconds from the first message accepted to the last, copies per recipient)."""
    TIMES.clear()
    extra = [subprocess.Popen([sys.executable, "-m", "digest", "worker", "--poll", "0.2"],
                              cwd=folder, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(workers - 1)]
    send = subprocess.Popen([sys.executable, "-m", "digest", "send", "--skip-link-check"],
                            cwd=folder, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    received: collections.Counter[str] = collections.Counter()
    if kill_after is not None and extra:
        while sum(received.values()) < kill_after:
            received += drain(counts)
            time.sleep(0.05)
        extra[0].send_signal(signal.SIGKILL)
    send.wait()
    for process in extra:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait()
    time.sleep(0.5)
    received += drain(counts)
    assert send.returncode == 0, send.stderr.read() if send.stderr else ""
    return max(TIMES) - min(TIMES), received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1200)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    from digest.deliver.sink import free_port

    port = free_port()
    counts: Any = multiprocessing.Queue()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=sink_process, args=(port, args.delay, counts, ready),
                                   daemon=True)
    sink.start()
    ready.wait(10)
    admin = create_engine(PG)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, workers, kill in (("1 process", 1, None), ("3 processes", 3, None),
                                         ("3, one killed -9 midway", 3,
                                          args.subscribers // 3)):
                schema = f"bench_{uuid.uuid4().hex[:10]}"
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                folder = Path(tmp) / schema
                site(folder, schema, port, args.subscribers, args.connections)
                elapsed, received = run(folder, workers, kill, counts, args.subscribers)
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                served = len(received)
                twice = sum(1 for n in received.values() if n > 1)
                results.append((label, elapsed, served, twice))
                print(f"{label:<26} {elapsed:6.1f} s from first to last message  "
                      f"{args.subscribers / elapsed:6.0f} msg/s  served "
                      f"{served}/{args.subscribers}, {twice} twice")
    finally:
        sink.terminate()
        admin.dispose()
    one, three = results[0][1], results[1][1]
    print(f"speed-up with 3 processes: {one / three:.2f}x (sink answers after "
          f"{args.delay * 1000:.0f} ms, {args.connections} connections per process)")


if __name__ == "__main__":
    main()
