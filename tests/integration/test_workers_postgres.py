"""Many senders on one PostgreSQL database: `digest send` and `digest worker` processes
share an edition through SELECT … FOR UPDATE SKIP LOCKED and leases; each subscriber is
served once (a killed worker's in-flight messages at most twice, with the same
Message-ID), and the rate limit holds for all of them together."""

from __future__ import annotations

import collections
import email
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from digest.deliver.sink import SmtpSink
from digest.demo import shifted_feed
from digest.sample import SAMPLE_FEED
from tests.conftest import SECRET, FeedServer, Route, config_text, run_digest

pytestmark = pytest.mark.postgres
ENV = {"DIGEST_SECRET_KEY": SECRET}


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}, **ENV}


def _site(tmp_path: Path, feed_server: FeedServer, pg_url: str, port: int, people: int,
          smtp: str = "") -> Path:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    (tmp_path / "config.toml").write_text(config_text(
        feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=port, database=pg_url,
        smtp="lease_seconds = 3\nfirst_retry_seconds = 0.5\n" + smtp))
    (tmp_path / "list.csv").write_text(
        "email\n" + "".join(f"r{i:04d}@example.org\n" for i in range(people)))
    assert run_digest("gather", cwd=tmp_path).code == 0
    assert run_digest("subscribers", "import", "list.csv", cwd=tmp_path).code == 0
    return tmp_path


def _start(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=folder, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _by_recipient(sink: SmtpSink) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for item in sink.received:
        msg = email.message_from_bytes(item.data, policy=policy.default)
        found[item.recipients[0]].append(str(msg["Message-ID"]))
    return found


def _senders(pg_url: str) -> collections.Counter[str]:
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT sent_by FROM deliveries WHERE status = 'sent'"))
        counted = collections.Counter(str(r[0]) for r in rows)
    engine.dispose()
    return counted


def _wait(predicate: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(30)


def _send_with_two_workers(folder: Path) -> None:
    """`digest send` alongside two `digest worker` processes, until the edition is complete."""
    workers = [_start(folder, "worker", "--poll", "0.2") for _ in range(2)]
    try:
        sent = run_digest("send", "--skip-link-check", cwd=folder, env=ENV, timeout=180)
        assert sent.code == 0, sent.err
    finally:
        _stop(*workers)


def test_three_processes_deliver_one_edition_together(
    tmp_path: Path, feed_server: FeedServer, pg_url: str,
) -> None:
    with SmtpSink(delay=0.01) as sink:
        folder = _site(tmp_path, feed_server, pg_url, sink.port, 240)
        _send_with_two_workers(folder)
        by_rcpt = _by_recipient(sink)
        assert set(by_rcpt) == {f"r{i:04d}@example.org" for i in range(240)}
        assert all(len(ids) == 1 for ids in by_rcpt.values()), "each subscriber exactly once"
    senders = _senders(pg_url)
    assert len(senders) == 3 and sum(senders.values()) == 240, senders
    assert all(workers_share > 10 for workers_share in senders.values()), senders


def test_a_killed_worker_leaves_its_claims_to_the_others(
    tmp_path: Path, feed_server: FeedServer, pg_url: str,
) -> None:
    with SmtpSink(delay=0.02) as sink:
        folder = _site(tmp_path, feed_server, pg_url, sink.port, 200)
        victim = _start(folder, "worker", "--poll", "0.2")
        helper = _start(folder, "worker", "--poll", "0.2")
        send = _start(folder, "send", "--skip-link-check")
        try:
            _wait(lambda: len(sink.received) >= 40)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            _, err = send.communicate(timeout=180)
            assert send.returncode == 0, err
        finally:
            _stop(helper, send)
        by_rcpt = _by_recipient(sink)
        assert set(by_rcpt) == {f"r{i:04d}@example.org" for i in range(200)}
        twice = {r: ids for r, ids in by_rcpt.items() if len(ids) > 1}
        assert len(twice) <= 2 * 2  # at most 2 x max_connections of the killed worker's
        assert all(len(set(ids)) == 1 for ids in twice.values()), "same Message-ID"


def test_the_rate_limit_holds_across_processes(
    tmp_path: Path, feed_server: FeedServer, pg_url: str,
) -> None:
    rate = 20
    with SmtpSink() as sink:
        folder = _site(tmp_path, feed_server, pg_url, sink.port, 70,
                       smtp=f"rate_per_second = {rate}\n")
        _send_with_two_workers(folder)
        times = sorted(item.at for item in sink.received)
    assert len(times) == 70
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= rate + 2, f"{busiest} messages in one second with a limit of {rate}/s"
    assert len(_senders(pg_url)) >= 2  # the limit held while several processes sent
