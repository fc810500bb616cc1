"""Reads and writes of the schedule_runs table: the record of every scheduled firing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import RunOutcome, ScheduleRun


def latest_scheduled(session: Session) -> datetime | None:
    """The newest firing on record."""
    value: datetime | None = session.scalar(select(func.max(ScheduleRun.scheduled_for)))
    return value


def get(session: Session, scheduled_for: datetime) -> ScheduleRun | None:
    """The run of one firing, if it was recorded."""
    return session.scalar(select(ScheduleRun).where(ScheduleRun.scheduled_for == scheduled_for))


def start(session: Session, scheduled_for: datetime, period: str, now: datetime,
          outcome: RunOutcome = RunOutcome.RUNNING, detail: str = "") -> ScheduleRun | None:
    """Record a firing; None when it was already recorded (it runs once)."""
    if get(session, scheduled_for) is not None:
        return None
    row = ScheduleRun(scheduled_for=scheduled_for, period=period, outcome=outcome,
                      detail=detail, started_at=now,
                      finished_at=None if outcome == RunOutcome.RUNNING else now)
    session.add(row)
    session.flush()
    return row


def finish(session: Session, run_id: int, outcome: RunOutcome, detail: str, now: datetime,
           edition_id: int | None = None) -> None:
    """Record how a firing ended."""
    row = session.get_one(ScheduleRun, run_id)
    row.outcome, row.detail, row.finished_at = outcome, detail[:2000], now
    if edition_id is not None:
        row.edition_id = edition_id


def recent(session: Session, limit: int = 10) -> Sequence[ScheduleRun]:
    """The newest runs first."""
    return session.scalars(
        select(ScheduleRun).order_by(ScheduleRun.scheduled_for.desc()).limit(limit)).all()


def unfinished(session: Session) -> Sequence[ScheduleRun]:
    """Runs a stopped daemon left open."""
    return session.scalars(
        select(ScheduleRun).where(ScheduleRun.outcome == RunOutcome.RUNNING)).all()
