"""Schedule arithmetic: next runs, missed firings, and the period each firing sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from digest.schedule import firings_between, last_firing, next_times, period_for

LONDON = ZoneInfo("Europe/London")
WEEKLY = CronTrigger.from_crontab("0 7 * * mon", timezone="Europe/London")


def test_next_five_runs_keep_local_time_across_the_clock_change() -> None:
    runs = next_times(WEEKLY, datetime(2026, 3, 20, tzinfo=UTC), 5)
    assert [r.astimezone(LONDON).strftime("%a %d %H:%M") for r in runs] == [
        "Mon 23 07:00", "Mon 30 07:00", "Mon 06 07:00", "Mon 13 07:00", "Mon 20 07:00"]
    # 07:00 in London is 07:00 UTC before the change on 29 March and 06:00 UTC after it.
    assert [r.astimezone(UTC).hour for r in runs[:2]] == [7, 6]


def test_weekly_firing_sends_its_iso_week_whatever_the_offset() -> None:
    before = datetime(2026, 3, 23, 7, 0, tzinfo=LONDON)
    after = datetime(2026, 3, 30, 7, 0, tzinfo=LONDON)
    assert period_for(WEEKLY, before, LONDON, 7).key == "2026-W13"
    assert period_for(WEEKLY, after, LONDON, 7).key == "2026-W14"
    autumn = datetime(2026, 10, 26, 7, 0, tzinfo=LONDON)  # the Monday after the change
    assert period_for(WEEKLY, autumn, LONDON, 7).key == "2026-W44"


def test_a_daily_firing_sends_the_interval_since_the_previous_one() -> None:
    daily = CronTrigger.from_crontab("30 6 * * *", timezone="UTC")
    fired = datetime(2026, 11, 25, 6, 30, tzinfo=UTC)
    period = period_for(daily, fired, UTC, 7)
    assert period.key == "2026-11-24T06:30..2026-11-25T06:30"
    assert (period.start, period.end) == (fired - timedelta(days=1), fired)


def test_missed_firings_and_the_last_one() -> None:
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    end = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    missed = firings_between(WEEKLY, start, end)
    assert [m.astimezone(LONDON).day for m in missed] == [9, 16, 23]
    assert last_firing(WEEKLY, end) == missed[-1]
    assert last_firing(WEEKLY, missed[-1]) == missed[-1]
    assert firings_between(WEEKLY, start, end, limit=1) == [missed[-1]]
