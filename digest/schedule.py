"""The unattended weekly send: `digest run-weekly` for cron, `digest schedule` as a daemon.

Each firing is keyed twice. The firing itself (the time it was scheduled for) is
recorded in schedule_runs, so it runs once across repeated firings and restarts.
Its period (the ISO week of that time in the schedule's timezone for a weekly
cron; the interval since the previous firing otherwise) keys the edition, so a
period is sent at most once — whether by the daemon, by cron or by a manual
`digest send` — and daylight-saving changes cannot make two weeks of one.

On start the daemon looks at the firings since the last one on record: the newest
is made up if it was missed by less than misfire_grace_hours; any other missed
firing is recorded as missed and the editors are told. A stale edition is never
sent silently. One daemon runs per database (digest.locks).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import editions, operations
from .app import Context
from .compose import weekly_period
from .deliver.notify import notify_editors
from .deliver.run import Transport
from .domain import Period
from .errors import DigestError
from .gather.run import gather
from .locks import ExclusiveLock
from .models import EditionStatus, RunOutcome
from .queries import deliveries as delivery_queries
from .queries import editions as edition_queries
from .queries import runs as run_queries

log = logging.getLogger("digest.schedule")
WEEK = timedelta(days=7)
MAX_CATCH_UP = 500  # firings looked at on start (a long outage is reported, not replayed)


def event(step: str, **fields: object) -> None:
    """One structured log line: ``step=… key=value …`` (never a secret)."""
    parts = [f"step={step}"] + [f"{k}={_quote(v)}" for k, v in fields.items()]
    log.info(" ".join(parts))


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def trigger_for(ctx: Context) -> CronTrigger:
    """The configured cron schedule in its timezone."""
    cfg = ctx.settings.schedule
    if cfg is None:
        raise DigestError(f"{ctx.settings.path}: no [schedule] table; the daemon needs "
                          "[schedule] cron and timezone")
    return CronTrigger.from_crontab(cfg.cron, timezone=cfg.timezone)


def next_times(trigger: BaseTrigger, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` firings after ``after``."""
    times: list[datetime] = []
    previous = None
    moment = after
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous, moment = fire, fire + timedelta(microseconds=1)
    return times


def firings_between(trigger: BaseTrigger, after: datetime, until: datetime,
                    limit: int = MAX_CATCH_UP) -> list[datetime]:
    """The firings in (after, until], oldest first (at most ``limit``, the newest kept)."""
    found: list[datetime] = []
    previous = None
    moment = after + timedelta(microseconds=1)
    while True:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None or fire > until:
            return found[-limit:]
        found.append(fire)
        previous, moment = fire, fire + timedelta(microseconds=1)


def last_firing(trigger: BaseTrigger, at: datetime) -> datetime | None:
    """The newest firing at or before ``at``."""
    interval = _interval(trigger, at)
    found = firings_between(trigger, at - 2 * interval, at)
    return found[-1] if found else None


def _interval(trigger: BaseTrigger, around: datetime) -> timedelta:
    pair = next_times(trigger, around, 2)
    return (pair[1] - pair[0]) if len(pair) == 2 else WEEK


def period_for(trigger: BaseTrigger, fired: datetime, tz: tzinfo, window_days: int) -> Period:
    """The period a firing sends: the ISO week (in ``tz``) for a weekly schedule, else the
    interval since the previous firing."""
    before = firings_between(trigger, fired - 2 * _interval(trigger, fired), fired)
    previous = before[-2] if len(before) >= 2 else None
    if previous is None or fired - previous >= timedelta(days=6):
        return weekly_period(fired, tz, window_days)
    start, end = previous.astimezone(tz), fired.astimezone(tz)
    return Period(key=f"{start:%Y-%m-%dT%H:%M}..{end:%Y-%m-%dT%H:%M}", start=previous,
                  end=fired)


@dataclass
class RunResult:
    """What one firing did."""

    scheduled_for: datetime
    period: str
    outcome: RunOutcome
    detail: str
    edition_id: int | None = None
    send: editions.SendOutcome | None = None
    seconds: float = 0.0


TransportFactory = Callable[[], Transport]


def _outcome(sent: editions.SendOutcome) -> tuple[RunOutcome, str]:
    State = editions.SendState
    run = sent.run
    counts = ", ".join(f"{k} {v}" for k, v in sent.counts.items() if v)
    return {
        State.NOTHING_NEW: (RunOutcome.NOTHING_NEW, "no article that was not featured already"),
        State.ALREADY_SENT: (RunOutcome.ALREADY_SENT, "the period's edition was already sent"),
        State.COMPLETE: (RunOutcome.SENT, f"{counts}" if run else "complete"),
        State.INCOMPLETE: (RunOutcome.INCOMPLETE, f"still owed: {counts}"),
        State.NOT_SENDABLE: (RunOutcome.HELD, f"the edition is {sent.status}"),
        State.THIN_SKIPPED: (RunOutcome.THIN, f"{sent.articles} articles: below min_articles"),
        State.HELD: (RunOutcome.HELD, f"{sent.articles} articles: held for the editors"),
        State.AWAITING_APPROVAL: (RunOutcome.AWAITING_APPROVAL,
                                  "prepared; waiting for `digest editions approve`"),
    }[sent.state]


def run_firing(ctx: Context, transport: TransportFactory, scheduled_for: datetime,
               period: Period, *, stop: threading.Event | None = None) -> RunResult | None:
    """gather → compose → pre-flight check → send, for one firing; None when that firing
    already ran (a repeated firing, a restart)."""
    started = time.monotonic()
    with ctx.db.session() as session:
        row = run_queries.start(session, scheduled_for, period.key, ctx.now())
        run_id = row.id if row is not None else None
    if run_id is None:
        event("skip", scheduled_for=scheduled_for.isoformat(), period=period.key,
              reason="this firing already ran")
        return None
    event("start", scheduled_for=scheduled_for.isoformat(), period=period.key)
    result = RunResult(scheduled_for, period.key, RunOutcome.FAILED, "")
    try:
        report = gather(ctx.settings, ctx.db, now=ctx.now)
        event("gather", new=report.new, sources=len(report.sources),
              failed=",".join(s.name for s in report.failed) or "none")
        cfg = ctx.settings.schedule
        approval = bool(cfg and cfg.require_approval)
        sent = editions.send(ctx, period, transport(), stop=stop, approval=approval)
        result.outcome, result.detail = _outcome(sent)
        result.edition_id, result.send = sent.edition_id, sent
        if sent.state == editions.SendState.AWAITING_APPROVAL and sent.edition_id:
            _mail_preview(ctx, transport, sent.edition_id)
        event("send", period=period.key, outcome=result.outcome.value,
              edition=sent.edition_id or "-", detail=result.detail)
    except DigestError as exc:
        result.outcome, result.detail = RunOutcome.FAILED, exc.message
        event("failed", period=period.key, error=exc.message)
    except Exception as exc:
        result.outcome = RunOutcome.FAILED
        result.detail = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("step=failed period=%s", period.key)
    result.seconds = time.monotonic() - started
    with ctx.db.session() as session:
        run_queries.finish(session, run_id, result.outcome, result.detail, ctx.now(),
                           result.edition_id)
    if ctx.settings.schedule and ctx.settings.schedule.summary:
        _mail_summary(ctx, transport, result)
    event("done", period=period.key, outcome=result.outcome.value,
          seconds=f"{result.seconds:.1f}")
    return result


def run_weekly(ctx: Context, transport: TransportFactory, *,
               stop: threading.Event | None = None) -> RunResult | None:
    """`digest run-weekly`: the daemon's job, for cron users: this week, now."""
    now = ctx.now().replace(second=0, microsecond=0)
    period = weekly_period(now, ctx.settings.timezone, ctx.settings.digest.window_days)
    return run_firing(ctx, transport, now, period, stop=stop)


def _mail_preview(ctx: Context, transport: TransportFactory, edition_id: int) -> None:
    with ctx.db.reader() as session:
        row = edition_queries.get(session, edition_id)
        assert row is not None
        rendered = editions.stored_rendering(row)
        period, subject = row.period, row.subject
    reader = "editor@example.invalid"
    copy = editions.sample_copy(ctx, rendered,
                                ctx.recipient(0, reader, reader, None, rendered.nonce))
    body = (f"Edition {period} is ready and waits for your approval; nothing was sent.\n\n"
            f"To send it:  digest editions approve {edition_id}\n"
            f"To stop it:  digest editions cancel {edition_id}\n\n{copy.text}")
    sent = notify_editors(ctx.settings.publication, transport(),
                          f"[approve] {subject}", body, date=ctx.now(), html=copy.html)
    event("preview", edition=edition_id, editors=",".join(sent) or "none")


def _mail_summary(ctx: Context, transport: TransportFactory, result: RunResult) -> None:
    when = result.scheduled_for.astimezone(ctx.settings.timezone)
    lines = [f"Scheduled run for {when:%Y-%m-%d %H:%M %Z}", f"Period: {result.period}",
             f"Outcome: {result.outcome.value}"]
    if result.detail:
        lines.append(f"Detail: {result.detail}")
    sent = result.send
    if sent is not None and result.edition_id is not None:
        with ctx.db.reader() as session:
            row = edition_queries.get(session, result.edition_id)
            plan = edition_queries.stored_plan(session, row) if row is not None else None
            counts = delivery_queries.counts(session, result.edition_id)
        if plan is not None:
            lines.append(f"Articles: {len(plan.articles)} in {len(plan.section_names)} "
                         f"sections ({', '.join(plan.section_names)})")
        run = sent.run
        lines.append(f"Sent {counts['sent']}, deferred {counts['deferred']}, failed "
                     f"{counts['failed']} (bounced {len(run.failures) if run else 0}), "
                     f"suppressed {counts['suppressed']}")
    lines.append(f"Duration: {result.seconds:.1f} s")
    notify_editors(ctx.settings.publication, transport(),
                   f"[digest] {result.period}: {result.outcome.value}", "\n".join(lines) + "\n",
                   date=ctx.now())


class Daemon:
    """`digest schedule`: fires the weekly job on the cron schedule, makes up a recent
    missed firing on start, sends approved editions at their deadline."""

    def __init__(self, ctx: Context, transport: TransportFactory, *,
                 trigger: BaseTrigger | None = None, check_every: float = 60.0) -> None:
        self.ctx = ctx
        self.transport = transport
        self.trigger = trigger or trigger_for(ctx)
        self.cfg = ctx.settings.schedule
        self.check_every = check_every
        self.stop = threading.Event()
        self.busy = threading.Lock()

    @property
    def grace(self) -> timedelta:
        """How late a missed firing may still be made up."""
        return timedelta(hours=self.cfg.misfire_grace_hours if self.cfg else 6.0)

    def _period(self, fired: datetime) -> Period:
        return period_for(self.trigger, fired, self.ctx.settings.timezone,
                          self.ctx.settings.digest.window_days)

    def resume_unfinished(self) -> list[editions.SendOutcome]:
        """Finish the editions a previous daemon (killed, out of memory) left part-sent, and
        close the run records it left open."""
        now = self.ctx.now()
        with self.ctx.db.session() as session:
            stale = run_queries.unfinished(session)
            for run in stale:
                run_queries.finish(session, run.id, RunOutcome.FAILED,
                                   "the daemon stopped during this run; its edition (if "
                                   "any) is continued on start", now, run.edition_id)
        with self.ctx.db.reader() as session:
            sending = delivery_queries.sending_editions(session)
        finished = []
        for edition_id in sending:
            event("resume", edition=edition_id)
            with self.busy:
                finished.append(editions.deliver_edition(self.ctx, edition_id,
                                                         self.transport(), stop=self.stop))
        return finished

    def catch_up(self) -> list[RunResult]:
        """Make up, or report, the firings missed while no daemon ran."""
        now = self.ctx.now()
        with self.ctx.db.reader() as session:
            last = run_queries.latest_scheduled(session)
        if last is None:
            newest = last_firing(self.trigger, now)
            if newest is not None:
                with self.ctx.db.session() as session:
                    run_queries.start(session, newest, self._period(newest).key, now,
                                      RunOutcome.BASELINE,
                                      "first start: earlier firings were not this daemon's")
            event("baseline", last_firing=newest.isoformat() if newest else "none")
            return []
        missed = firings_between(self.trigger, last, now)
        results: list[RunResult] = []
        for fired in missed:
            period = self._period(fired)
            if fired == missed[-1] and now - fired <= self.grace:
                event("catch-up", scheduled_for=fired.isoformat(), late=str(now - fired))
                made_up = self.fire(fired)
                if made_up is not None:
                    results.append(made_up)
                continue
            detail = (f"missed by {now - fired}, more than misfire_grace_hours; not sent "
                      "(`digest send --since … --until …` sends it by hand)")
            with self.ctx.db.session() as session:
                run_queries.start(session, fired, period.key, now, RunOutcome.MISSED, detail)
            event("missed", scheduled_for=fired.isoformat(), period=period.key)
            notify_editors(self.ctx.settings.publication, self.transport(),
                           f"[digest] Missed the scheduled run of {period.key}",
                           f"The digest daemon was not running at {fired.isoformat()}, the "
                           f"scheduled time of {period.key}, and started {now - fired} late, "
                           f"more than misfire_grace_hours. Nothing was sent for that "
                           f"period.\n", date=now)
            results.append(RunResult(fired, period.key, RunOutcome.MISSED, detail))
        return results

    def fire(self, scheduled_for: datetime | None = None) -> RunResult | None:
        """The job: run the firing scheduled for ``scheduled_for`` (default: the latest)."""
        fired = scheduled_for or last_firing(self.trigger, self.ctx.now())
        if fired is None:
            return None
        with self.busy:
            return run_firing(self.ctx, self.transport, fired, self._period(fired),
                              stop=self.stop)

    def check_approvals(self) -> list[int]:
        """Editions awaiting approval past approval_deadline_hours: send or keep holding."""
        if self.cfg is None or not self.cfg.require_approval:
            return []
        deadline = timedelta(hours=self.cfg.approval_deadline_hours)
        now = self.ctx.now()
        with self.ctx.db.reader() as session:
            due = [(r.id, r.edition_id) for r in run_queries.recent(session, 50)
                   if r.outcome == RunOutcome.AWAITING_APPROVAL and r.edition_id
                   and now - r.scheduled_for >= deadline]
        acted = []
        for run_id, edition_id in due:
            assert edition_id is not None
            with self.ctx.db.reader() as session:
                row = edition_queries.get(session, edition_id)
                status = row.status if row else None
            if status != EditionStatus.PREPARED:
                by_hand: dict[str, tuple[RunOutcome, str]] = {
                    EditionStatus.SENT: (RunOutcome.SENT, "approved by hand and sent"),
                    EditionStatus.CANCELLED: (RunOutcome.HELD, "cancelled by hand"),
                }
                outcome, detail = by_hand.get(
                    status or "", (RunOutcome.INCOMPLETE, f"approved by hand; {status}"))
            elif self.cfg.approval_policy == "send":
                with self.busy:
                    sent = editions.deliver_edition(
                        self.ctx, edition_id, self.transport(), stop=self.stop,
                        before=functools.partial(operations.approve, self.ctx, edition_id))
                outcome, detail = _outcome(sent)
                detail = f"sent at the approval deadline: {detail}"
            else:
                outcome, detail = RunOutcome.HELD, "not approved by the deadline; held"
                notify_editors(self.ctx.settings.publication, self.transport(),
                               f"[digest] Edition {edition_id} was not approved and is held",
                               f"Edition {edition_id} was not approved within "
                               f"{self.cfg.approval_deadline_hours:g} hours, so it is held "
                               f"and was not sent.\nTo send it anyway:  digest editions "
                               f"approve {edition_id}\n", date=now)
            with self.ctx.db.session() as session:
                run_queries.finish(session, run_id, outcome, detail, now, edition_id)
            event("deadline", edition=edition_id, outcome=outcome.value)
            acted.append(edition_id)
        return acted

    def _safely(self, job: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except DigestError as exc:
                event("error", error=exc.message)
            except Exception:
                log.exception("step=error")
        return run

    def run_forever(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or ``self.stop``): the batch in flight is finished
        and recorded first."""
        with ExclusiveLock(self.ctx.db, "schedule", "`digest schedule` daemon"):
            scheduler = BlockingScheduler(timezone=self.ctx.settings.timezone)
            if install_signals:
                def shut(signum: int, frame: object) -> None:
                    # Only a flag: the watcher stops the scheduler, and a send in flight
                    # sees the flag, finishes its batch and records it.
                    event("stop", signal=signal.Signals(signum).name)
                    self.stop.set()

                signal.signal(signal.SIGTERM, shut)
                signal.signal(signal.SIGINT, shut)
            self._safely(self.resume_unfinished)()
            self._safely(self.catch_up)()
            if self.stop.is_set():
                event("exit")
                return
            scheduler.add_job(self._safely(self.fire), self.trigger, id="weekly",
                              max_instances=1, coalesce=True,
                              misfire_grace_time=int(self.grace.total_seconds()) or 1)
            scheduler.add_job(self._safely(self.check_approvals),
                              IntervalTrigger(seconds=self.check_every), id="approvals",
                              max_instances=1, coalesce=True)
            watcher = threading.Thread(target=self._watch, args=(scheduler,), daemon=True)
            watcher.start()
            nxt = next_times(self.trigger, self.ctx.now(), 1)
            event("ready", next_run=nxt[0].isoformat() if nxt else "never")
            scheduler.start()
            # The scheduler has stopped; wait for a run in flight to record its batch.
            with self.busy:
                pass
            event("exit")

    def _watch(self, scheduler: BlockingScheduler) -> None:
        self.stop.wait()
        while not scheduler.running:  # stopped before the scheduler got going
            time.sleep(0.05)
        scheduler.shutdown(wait=False)


def status(ctx: Context, trigger: BaseTrigger | None) -> dict[str, Any]:
    """What `digest status` shows: recent runs, the next run, the editions in progress."""
    with ctx.db.reader() as session:
        runs = [(r.scheduled_for, r.period, r.outcome, r.detail)
                for r in run_queries.recent(session, 10)]
    in_progress = [e for e in operations.list_editions(ctx, 20)
                   if e.status in (EditionStatus.SENDING, EditionStatus.PAUSED,
                                   EditionStatus.PREPARED)]
    upcoming = next_times(trigger, ctx.now(), 1) if trigger is not None else []
    return {"runs": runs, "next": upcoming[0] if upcoming else None,
            "in_progress": in_progress}

