"""The unattended weekly send: each period exactly once, across repeated firings,
restarts, downtime and a manual send, with the editors told what they need to know.

Most tests drive the daemon's own functions with a controlled clock; one runs the real
APScheduler loop with a fast trigger, and two run the real `digest schedule` process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from digest import editions, subscribers
from digest.app import Context
from digest.config import load_config
from digest.deliver.sink import SmtpSink
from digest.deliver.smtp import SMTPTransport
from digest.demo import shifted_feed
from digest.gather.run import gather
from digest.locks import ExclusiveLock
from digest.models import RunOutcome, ScheduleRun
from digest.sample import SAMPLE_FEED
from digest.schedule import Daemon, run_weekly
from tests.conftest import SECRET, FeedServer, Route, config_text, run_digest

MONDAY = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # a firing of "0 7 * * mon" in UTC
EDITOR = "ed@example.org"
READERS = ("a@example.org", "b@example.org")


@dataclass
class Clock:
    """A clock the test moves."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    ctx: Context
    clock: Clock
    sink: SmtpSink
    feed: FeedServer

    def daemon(self, **kwargs: object) -> Daemon:
        return Daemon(self.ctx, lambda: SMTPTransport(self.ctx.settings.smtp), **kwargs)

    def to(self, address: str) -> list[bytes]:
        return [r.data for r in self.sink.received if address in r.recipients]

    def runs(self) -> list[tuple[str, str]]:
        with self.ctx.db.reader() as session:
            return [(r.period, r.outcome) for r in
                    session.query(ScheduleRun).order_by(ScheduleRun.scheduled_for)]


def _config(feed_url: str, port: int, schedule: str = "") -> str:
    text = config_text(feeds=[("Meridian", feed_url)], smtp_port=port,
                       extra=f'[schedule]\ncron = "0 7 * * mon"\ntimezone = "UTC"\n{schedule}')
    return text.replace('postal_address = "1 Test Street, Testville"',
                        f'postal_address = "1 Test Street, Testville"\neditors = ["{EDITOR}"]')


@pytest.fixture
def world(tmp_path: Path, feed_server: FeedServer, smtp_sink: SmtpSink,
          environ: dict[str, str]) -> Callable[..., World]:
    made: list[Context] = []

    def make(schedule: str = "", now: datetime = MONDAY) -> World:
        feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), now))
        (tmp_path / "config.toml").write_text(_config(feed_server.url("/feed"),
                                                      smtp_sink.port, schedule))
        clock = Clock(now)
        ctx = Context(load_config(tmp_path / "config.toml").with_environ(environ), clock=clock)
        made.append(ctx)
        for address in READERS:
            subscribers.add(ctx.db, address, now=now)
        return World(ctx, clock, smtp_sink, feed_server)

    yield make  # type: ignore[misc]
    for ctx in made:
        ctx.close()


def test_first_start_records_a_baseline_and_sends_nothing(world: Callable[..., World]) -> None:
    w = world()
    w.clock.now = MONDAY + timedelta(hours=3)
    assert w.daemon().catch_up() == []
    assert w.runs() == [("2026-W48", RunOutcome.BASELINE)]
    assert w.sink.received == []


def test_a_firing_delivers_once_then_repeats_and_restarts_deliver_nothing(
    world: Callable[..., World],
) -> None:
    w = world()
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()  # baseline: last Monday
    w.clock.now = MONDAY
    first = w.daemon().fire(MONDAY)
    assert first is not None and first.outcome == RunOutcome.SENT
    assert first.period == "2026-W48"
    assert all(len(w.to(r)) == 1 for r in READERS)
    assert w.daemon().fire(MONDAY) is None  # the same firing again
    w.clock.now = MONDAY + timedelta(minutes=5)
    assert w.daemon().catch_up() == []  # a restart
    # A manual send of the same period changes nothing either.
    from digest.compose import weekly_period

    manual = editions.send(w.ctx, weekly_period(MONDAY, UTC, 7),
                           SMTPTransport(w.ctx.settings.smtp))
    assert manual.state == editions.SendState.ALREADY_SENT
    assert all(len(w.to(r)) == 1 for r in READERS)


def test_a_manual_send_before_the_firing_makes_it_send_nothing(
    world: Callable[..., World],
) -> None:
    from digest.compose import weekly_period

    w = world()
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY - timedelta(minutes=10)
    gather(w.ctx.settings, w.ctx.db, now=w.clock)
    manual = editions.send(w.ctx, weekly_period(MONDAY, UTC, 7),
                           SMTPTransport(w.ctx.settings.smtp), check_links=False)
    assert manual.state == editions.SendState.COMPLETE
    w.clock.now = MONDAY
    result = w.daemon().fire(MONDAY)
    assert result is not None and result.outcome == RunOutcome.ALREADY_SENT
    assert all(len(w.to(r)) == 1 for r in READERS)


def test_the_next_week_with_nothing_new_sends_nothing_and_says_so(
    world: Callable[..., World],
) -> None:
    w = world()
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY
    w.daemon().fire(MONDAY)
    w.clock.now = MONDAY + timedelta(days=7)
    nxt = w.daemon().fire(MONDAY + timedelta(days=7))
    assert nxt is not None and nxt.outcome == RunOutcome.NOTHING_NEW
    assert nxt.period == "2026-W49" and "not featured" in nxt.detail
    assert all(len(w.to(r)) == 1 for r in READERS)


def test_a_missed_firing_within_grace_runs_once_on_start(world: Callable[..., World]) -> None:
    w = world()
    w.clock.now = MONDAY - timedelta(days=2)
    w.daemon().catch_up()  # baseline: the Monday before
    w.clock.now = MONDAY + timedelta(hours=2)  # the daemon was down at 07:00
    made_up = w.daemon().catch_up()
    assert [(r.period, r.outcome) for r in made_up] == [("2026-W48", RunOutcome.SENT)]
    assert all(len(w.to(r)) == 1 for r in READERS)
    assert w.daemon().catch_up() == []  # another restart: not again
    assert all(len(w.to(r)) == 1 for r in READERS)


def test_a_firing_missed_past_grace_is_reported_not_sent(world: Callable[..., World]) -> None:
    w = world()
    w.clock.now = MONDAY - timedelta(days=2)
    w.daemon().catch_up()
    w.clock.now = MONDAY + timedelta(hours=8)  # more than the default 6 hours late
    missed = w.daemon().catch_up()
    assert [(r.period, r.outcome) for r in missed] == [("2026-W48", RunOutcome.MISSED)]
    assert all(w.to(r) == [] for r in READERS)
    notice = w.to(EDITOR)
    assert len(notice) == 1 and b"Missed the scheduled run of 2026-W48" in notice[0]
    assert w.daemon().catch_up() == []  # reported once
    assert len(w.to(EDITOR)) == 1


def test_approval_then_deadline(world: Callable[..., World]) -> None:
    w = world('require_approval = true\napproval_deadline_hours = 2\napproval_policy = "send"')
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY
    daemon = w.daemon()
    result = daemon.fire(MONDAY)
    assert result is not None and result.outcome == RunOutcome.AWAITING_APPROVAL
    assert all(w.to(r) == [] for r in READERS)
    preview = w.to(EDITOR)
    assert len(preview) == 1 and b"digest editions approve" in preview[0]
    w.clock.now = MONDAY + timedelta(hours=1)
    assert daemon.check_approvals() == []
    w.clock.now = MONDAY + timedelta(hours=3)
    assert daemon.check_approvals() == [result.edition_id]
    assert all(len(w.to(r)) == 1 for r in READERS)
    assert w.runs()[-1] == ("2026-W48", RunOutcome.SENT)


def test_approval_not_given_holds_the_edition(world: Callable[..., World]) -> None:
    w = world('require_approval = true\napproval_deadline_hours = 1\napproval_policy = "hold"')
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY
    daemon = w.daemon()
    result = daemon.fire(MONDAY)
    assert result is not None
    w.clock.now = MONDAY + timedelta(hours=2)
    daemon.check_approvals()
    assert all(w.to(r) == [] for r in READERS)
    assert w.runs()[-1] == ("2026-W48", RunOutcome.HELD)
    assert any(b"was not approved and is held" in m for m in w.to(EDITOR))


def test_summary_mail_after_every_run(world: Callable[..., World]) -> None:
    w = world("summary = true")
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY
    w.daemon().fire(MONDAY)
    summary = [m for m in w.to(EDITOR) if b"Outcome: sent" in m]
    assert len(summary) == 1
    assert b"Sent 2, deferred 0, failed 0" in summary[0] and b"Articles: 15 in" in summary[0]


def test_run_weekly_is_the_same_job_for_cron(world: Callable[..., World]) -> None:
    w = world()
    first = run_weekly(w.ctx, lambda: SMTPTransport(w.ctx.settings.smtp))
    assert first is not None and first.outcome == RunOutcome.SENT and first.period == "2026-W48"
    w.clock.now = MONDAY + timedelta(minutes=1)
    again = run_weekly(w.ctx, lambda: SMTPTransport(w.ctx.settings.smtp))
    assert again is not None and again.outcome == RunOutcome.ALREADY_SENT
    assert all(len(w.to(r)) == 1 for r in READERS)


def test_the_real_scheduler_loop_with_a_fast_trigger(world: Callable[..., World]) -> None:
    w = world(now=datetime.now(UTC))
    w.clock.now = datetime.now(UTC)
    real_clock = type("RealClock", (), {"__call__": lambda self: datetime.now(UTC)})()
    w.ctx.clock = real_clock  # type: ignore[assignment]
    daemon = w.daemon(trigger=IntervalTrigger(seconds=1), check_every=0.5)
    thread = threading.Thread(target=daemon.run_forever, kwargs={"install_signals": False})
    thread.start()
    deadline = time.monotonic() + 20
    while len([r for r in w.runs() if r[1] != RunOutcome.BASELINE]) < 3:
        assert time.monotonic() < deadline, w.runs()
        time.sleep(0.1)
    daemon.stop.set()
    thread.join(20)
    assert not thread.is_alive()
    outcomes = [o for _, o in w.runs() if o != RunOutcome.BASELINE]
    assert outcomes[0] == RunOutcome.SENT
    assert set(outcomes[1:]) == {RunOutcome.NOTHING_NEW}
    assert all(len(w.to(r)) == 1 for r in READERS)


def _daemon_process(folder: Path) -> subprocess.Popen[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return subprocess.Popen([sys.executable, "-m", "digest", "schedule"], cwd=folder,
                            env={**env, "DIGEST_SECRET_KEY": SECRET}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_line(process: subprocess.Popen[str], text: str, seconds: float = 30) -> str:
    assert process.stderr is not None
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if text in line:
            return "".join(seen)
        if not line and process.poll() is not None:
            break
    raise AssertionError("".join(seen))


def test_the_daemon_process_stops_cleanly_and_a_second_one_refuses(
    world: Callable[..., World], tmp_path: Path,
) -> None:
    w = world()
    daemon = _daemon_process(tmp_path)
    try:
        lines = _wait_for_line(daemon, "step=ready")
        assert "step=baseline" in lines and "SECRET" not in lines and SECRET not in lines
        second = run_digest("schedule", cwd=tmp_path, env={"DIGEST_SECRET_KEY": SECRET})
        assert second.code == 1
        assert "another `digest schedule` daemon is already running" in second.err
        assert "Traceback" not in second.err
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert daemon.returncode == 0
    assert w.runs()[0][1] == RunOutcome.BASELINE
    # The lock went with the process: another daemon may start now.
    with ExclusiveLock(w.ctx.db, "schedule", "daemon"):
        pass


def test_show_and_status(world: Callable[..., World], tmp_path: Path) -> None:
    w = world()
    shown = run_digest("schedule", "--show", cwd=tmp_path)
    lines = shown.out.splitlines()
    assert shown.code == 0 and len(lines) == 5
    assert all(line.startswith("Mon ") and "07:00 UTC" in line and "edition 20" in line
               for line in lines)
    w.clock.now = MONDAY - timedelta(days=1)
    w.daemon().catch_up()
    w.clock.now = MONDAY
    w.daemon().fire(MONDAY)
    status = run_digest("status", cwd=tmp_path)
    assert status.code == 0 and "Next run: Mon" in status.out
    assert "2026-W48" in status.out and "sent" in status.out
