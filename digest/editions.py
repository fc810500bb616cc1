"""An edition's life: prepare (compose + render), preview, enqueue and send.

This is where the stages meet; the CLI, the scheduler and the web app call these
functions and hold no logic of their own. Every step is keyed by the period, so
running any of them twice changes nothing that was already done.
"""

from __future__ import annotations

import html
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import domain
from .app import Context
from .check import CheckReport, check_edition, check_links
from .compose import compose, drop_sections
from .deliver.message import MessageTemplate, OutgoingMessage, Recipient
from .deliver.notify import notify_editors
from .deliver.run import Job, Result, Retry, RunReport, Skip, Transport, deliver
from .deliver.smtp import MemoryTransport
from .errors import DigestError, EditionError
from .locks import send_lock
from .models import DeliveryStatus, Edition, EditionStatus, SubscriberStatus
from .queries import articles as article_queries
from .queries import deliveries as delivery_queries
from .queries import editions as edition_queries
from .queries import subscribers as subscriber_queries
from .queries.editions import variant_key
from .render import intro_from_markdown, render_edition
from .subscribers import normalise

SAMPLE_ADDRESS = "reader@example.com"


@dataclass(frozen=True)
class Prepared:
    """A composed and rendered edition, not necessarily stored."""

    plan: domain.Edition
    rendered: domain.RenderedEdition
    intro: str  # the Markdown it was rendered with
    thin: bool  # fewer articles than [digest] min_articles


def intro_source(ctx: Context, intro: str | None = None) -> str:
    """The editor's intro: the given Markdown, else [digest] intro_file (if it exists)."""
    if intro is not None:
        return intro
    path = ctx.settings.digest.intro_file
    if path is None or not path.exists():
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EditionError(f"cannot read the intro file {path}: {exc}") from None


def prepare(ctx: Context, period: domain.Period, *, intro: str | None = None) -> Prepared | None:
    """Compose and render the period's edition from articles not yet featured; None when
    there is nothing new to send."""
    with ctx.db.reader() as session:
        candidates = article_queries.candidates(session, period.start, period.end)
    source = intro_source(ctx, intro)
    intro_html, intro_text = intro_from_markdown(source)
    plan = compose(candidates, ctx.settings.digest, period, intro_html=intro_html,
                   intro_text=intro_text)
    if plan.is_empty:
        return None
    rendered = render_edition(plan, ctx.settings, ctx.templates, now=ctx.now())
    thin = len(plan.articles) < ctx.settings.digest.min_articles
    return Prepared(plan, rendered, source, thin)


def sample_recipient(ctx: Context, nonce: str) -> Recipient:
    """Who a preview is addressed to: the first confirmed subscriber, else a sample address."""
    with ctx.db.reader() as session:
        first = subscriber_queries.first_confirmed(session)
        if first is not None:
            return ctx.recipient(first.id, first.email, first.email_key, first.name, nonce)
    return ctx.recipient(0, SAMPLE_ADDRESS, SAMPLE_ADDRESS, None, nonce)


@dataclass(frozen=True)
class SampleCopy:
    """One reader's copy of an edition: what their mail client shows, and the MIME bytes."""

    recipient: Recipient
    html: str
    text: str
    message: bytes


def sample_copy(ctx: Context, rendered: domain.RenderedEdition,
                recipient: Recipient | None = None) -> SampleCopy:
    """A copy for ``recipient`` (default: the sample reader of sample_recipient)."""
    recipient = recipient or sample_recipient(ctx, rendered.nonce)
    return SampleCopy(
        recipient,
        domain.personalise(rendered.html, rendered.markers, recipient.personal, html.escape),
        domain.personalise(rendered.text, rendered.markers, recipient.personal),
        ctx.message_template(rendered).build(recipient, date=ctx.now()).data,
    )


def preflight(ctx: Context, prepared: Prepared, *, links: bool = True) -> CheckReport:
    """The pre-flight check of a prepared edition (see digest.check)."""
    copy = sample_copy(ctx, prepared.rendered)
    report = check_edition(prepared.plan, copy.html, copy.text, copy.message)
    if links:
        check_links(prepared.plan, report, [s.url for s in ctx.settings.sources])
    with ctx.db.reader() as session:
        last = edition_queries.last_sent(session)
    if prepared.intro.strip() and last is not None and last.intro.strip() == (
            prepared.intro.strip()):
        report.add("warning", "intro", f"the intro is the same as edition {last.period}'s; "
                   "update the intro file or remove it")
    return report


def stored_rendering(row: Edition) -> domain.RenderedEdition:
    """The rendering kept with an edition row (what its first recipients got)."""
    return domain.RenderedEdition(
        subject=row.subject, preheader=row.preheader, html=row.html, text=row.text,
        mjml=row.mjml, nonce=row.nonce,
    )


# -- preview ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreviewFiles:
    """Where a preview was written and to whom its .eml is addressed."""

    folder: Path
    html: Path
    text: Path
    eml: Path
    mjml: Path
    recipient: str
    subject: str
    articles: int


def preview(ctx: Context, period: domain.Period, out: Path, *,
            intro: str | None = None) -> PreviewFiles | None:
    """Write digest.html, digest.txt, digest.eml and digest.mjml for the coming edition."""
    ctx.signer  # noqa: B018 - a missing secret fails here, before any work is done
    prepared = prepare(ctx, period, intro=intro)
    if prepared is None:
        return None
    copy = sample_copy(ctx, prepared.rendered)
    out.mkdir(parents=True, exist_ok=True)
    files = PreviewFiles(
        folder=out, html=out / "digest.html", text=out / "digest.txt", eml=out / "digest.eml",
        mjml=out / "digest.mjml", recipient=copy.recipient.email,
        subject=prepared.rendered.subject, articles=len(prepared.plan.articles),
    )
    files.html.write_text(copy.html, encoding="utf-8")
    files.text.write_text(copy.text, encoding="utf-8")
    files.eml.write_bytes(copy.message)
    files.mjml.write_text(prepared.rendered.mjml, encoding="utf-8")
    return files


# -- send ------------------------------------------------------------------------------------

class SendState(StrEnum):
    """How `digest send` ended."""

    NOTHING_NEW = "nothing_new"  # no article of the window that was not featured already
    ALREADY_SENT = "already_sent"  # the period's edition is complete; nothing sent again
    COMPLETE = "complete"  # every delivery is final (some may have failed permanently)
    INCOMPLETE = "incomplete"  # deliveries remain owed (deferred past the retry window)
    NOT_SENDABLE = "not_sendable"  # held, paused or cancelled: an operator must act
    THIN_SKIPPED = "thin_skipped"  # fewer than min_articles; thin_policy = "skip"
    HELD = "held"  # fewer than min_articles; thin_policy = "hold": prepared, editors told
    AWAITING_APPROVAL = "awaiting_approval"  # prepared for the editors' approval


@dataclass
class SendOutcome:
    """The result of one `digest send`."""

    state: SendState
    period: str
    edition_id: int | None = None
    subject: str | None = None
    enqueued: int = 0
    run: RunReport | None = None
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    check: CheckReport | None = None
    articles: int = 0
    status: str | None = None  # the edition's status when it is not being sent
    notified: list[str] = field(default_factory=list)
    enqueue_seconds: float = 0.0  # storing the edition and its ledger rows


def _sender_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def send(
    ctx: Context,
    period: domain.Period,
    transport: Transport,
    *,
    stop: threading.Event | None = None,
    on_batch: Callable[[RunReport], None] | None = None,
    intro: str | None = None,
    check_links: bool = True,
    approval: bool = False,
) -> SendOutcome:
    """Create the period's edition (or continue the unfinished one) and deliver it to every
    confirmed subscriber still owed it. With ``approval``, a new edition is only prepared
    and stored, for `digest editions approve`.

    A new edition first passes the pre-flight check (errors block it) and the thin-week
    rule ([digest] min_articles and thin_policy). On SQLite one send runs at a time.
    """
    ctx.signer  # noqa: B018 - a missing secret fails here, before anything is stored
    with _sending(ctx):
        with ctx.db.reader() as session:
            existing = edition_queries.get_by_period(session, period.key)
            existing_id = existing.id if existing else None
        if existing_id is not None:
            return _deliver(ctx, existing_id, transport, stop, on_batch, resumed=True,
                            enqueue_late=True)
        prepared = prepare(ctx, period, intro=intro)
        if prepared is None:
            return SendOutcome(SendState.NOTHING_NEW, period.key)
        report = preflight(ctx, prepared, links=check_links)
        if report.errors:
            raise EditionError(
                f"edition {period.key} failed the pre-flight check; nothing was sent:\n  "
                + "\n  ".join(f.message for f in report.errors),
                hint="`digest check` shows every finding; `digest preview` writes the edition",
            )
        count = len(prepared.plan.articles)
        policy = ctx.settings.digest.thin_policy
        if prepared.thin and policy == "skip":
            return SendOutcome(SendState.THIN_SKIPPED, period.key,
                               subject=prepared.rendered.subject, check=report, articles=count)
        held = (prepared.thin and policy == "hold") or approval
        enqueue_started = time.monotonic()
        try:
            with ctx.db.session() as session:
                row = edition_queries.create_edition(
                    session, prepared.plan, prepared.rendered, intro=prepared.intro,
                    now=ctx.now(),
                    status=EditionStatus.PREPARED if held else EditionStatus.SENDING)
                if not held:
                    delivery_queries.enqueue(session, row.id, ctx.now())
                edition_id = row.id
        except IntegrityError:
            # Another process (on PostgreSQL) created this period's edition meanwhile.
            with ctx.db.reader() as session:
                found = edition_queries.get_by_period(session, period.key)
            if found is None:
                raise
            return _deliver(ctx, found.id, transport, stop, on_batch, resumed=True)
        if approval:
            return SendOutcome(SendState.AWAITING_APPROVAL, period.key, edition_id,
                               prepared.rendered.subject, check=report, articles=count)
        if held:
            notified = notify_editors(
                ctx.settings.publication, transport,
                f"[digest] Edition {period.key} is held: {count} articles",
                _held_notice(ctx, period.key, edition_id, count), date=ctx.now())
            return SendOutcome(SendState.HELD, period.key, edition_id,
                               prepared.rendered.subject, check=report, articles=count,
                               notified=notified)
        enqueue_seconds = time.monotonic() - enqueue_started
        outcome = _deliver(ctx, edition_id, transport, stop, on_batch, resumed=False)
        outcome.check, outcome.articles = report, count
        outcome.enqueue_seconds = enqueue_seconds
        return outcome


def _sending(ctx: Context) -> AbstractContextManager[object]:
    """One sender per SQLite database; PostgreSQL senders share the work through the ledger."""
    return send_lock(ctx.db) if ctx.db.is_sqlite else nullcontext()


def retry_policy(ctx: Context) -> Retry:
    """When deferred messages are tried again, from [smtp]."""
    cfg = ctx.settings.smtp
    return Retry(first=timedelta(seconds=cfg.first_retry_seconds),
                 window=timedelta(minutes=cfg.retry_window_minutes))


def _deliver(ctx: Context, edition_id: int, transport: Transport,
             stop: threading.Event | None, on_batch: Callable[[RunReport], None] | None,
             *, resumed: bool, wait: bool = True, enqueue_late: bool = False) -> SendOutcome:
    """Deliver a stored edition to everyone still owed it (the send lock is held)."""
    enqueued = 0
    with ctx.db.session() as session:
        current = edition_queries.get(session, edition_id)
        assert current is not None
        status, subject, period = current.status, current.subject, current.period
        rendered = stored_rendering(current)
        edition_row = current
        if status == EditionStatus.SENDING and enqueue_late:
            # `digest send` continuing this period's edition: subscribers who confirmed
            # since it was enqueued are owed it too. (Not on resume or retry of an old
            # edition, nor on a worker's every look.)
            enqueued = delivery_queries.enqueue(session, current.id, ctx.now())
    outcome = SendOutcome(SendState.COMPLETE, period, edition_id, subject, enqueued,
                          resumed=resumed, status=status)
    if status == EditionStatus.SENT:
        outcome.state = SendState.ALREADY_SENT
    elif status != EditionStatus.SENDING:
        outcome.state = SendState.NOT_SENDABLE
    else:
        ledger = delivery_queries.SqlLedger(
            ctx.db, edition_id, _sender_id(),
            lease=timedelta(seconds=ctx.settings.smtp.lease_seconds))
        if ctx.db.is_sqlite:
            # One sender per SQLite database, so any claim left over is a dead sender's.
            with ctx.db.session() as session:
                delivery_queries.release_claims(session, edition_id, ctx.now())
        # A worker (wait=False) returns as soon as nothing is left for it to claim; `digest
        # send` waits until the edition is complete, other workers' claims included.
        policy = retry_policy(ctx)
        retry = policy if wait else Retry(policy.first, policy.longest, timedelta(0))
        # On SQLite one sender takes large batches (few transactions); on PostgreSQL
        # senders take small ones, so that every worker gets a share of the edition.
        batch = None if ctx.db.is_sqlite else max(4 * transport.concurrency, 16)
        outcome.run = deliver(ledger, transport, Builder(ctx, rendered, edition=edition_row),
                              clock=ctx.now, stop=stop, on_progress=on_batch, retry=retry,
                              batch_size=batch,
                              lease=timedelta(seconds=ctx.settings.smtp.lease_seconds))
        outcome.state = SendState.COMPLETE if outcome.run.complete else SendState.INCOMPLETE
        with ctx.db.reader() as session:
            row = edition_queries.get(session, edition_id)
            if row is not None and row.status != EditionStatus.SENDING and not (
                    outcome.run.complete):
                outcome.state, outcome.status = SendState.NOT_SENDABLE, row.status
    with ctx.db.reader() as session:
        outcome.counts = delivery_queries.counts(session, edition_id)
    return outcome


def deliver_edition(ctx: Context, edition_id: int, transport: Transport, *,
                    stop: threading.Event | None = None,
                    on_batch: Callable[[RunReport], None] | None = None,
                    before: Callable[[], object] | None = None) -> SendOutcome:
    """Continue delivering a stored edition (resume, retry, approve). ``before`` (the
    operator's state change) runs under the send lock, so it never happens without the
    delivery that should follow it."""
    ctx.signer  # noqa: B018 - a missing secret fails here, before anything is sent
    with _sending(ctx):
        if before is not None:
            before()
        return _deliver(ctx, edition_id, transport, stop, on_batch, resumed=True)


def _held_notice(ctx: Context, period: str, edition_id: int, count: int) -> str:
    cfg = ctx.settings.digest
    return (
        f"Edition {period} of {ctx.settings.publication.name} has {count} "
        f"article{'s' if count != 1 else ''}, fewer than min_articles = {cfg.min_articles}, "
        f"so it was prepared and held (thin_policy = \"hold\"). Nothing was sent.\n\n"
        f"To send it as it is:  digest editions approve {edition_id}\n"
        f"To look at it first:  digest preview\n"
    )


class Builder:
    """Builds each recipient's message by substitution into the edition's stored rendering,
    or into the rendering of its variant without the sections the reader opted out of.

    Variants are rendered once per distinct set of preferences: kept in the database for
    a stored edition (a resumed send reuses them), in memory for a dry run.
    """

    def __init__(self, ctx: Context, rendered: domain.RenderedEdition, *,
                 edition: Edition | None = None, plan: domain.Edition | None = None,
                 test: bool = False, persist: bool = True) -> None:
        self.ctx = ctx
        self.rendered = rendered
        self.edition_id = edition.id if edition is not None else None
        self.rendered_at = edition.created_at if edition is not None else ctx.now()
        self.intro = edition.intro if edition is not None else ""
        self._plan = plan
        self.test = test
        self.persist = persist
        self.domain = ctx.settings.publication.domain
        self._templates: dict[str, MessageTemplate | None] = {
            variant_key(()): self._template(rendered)
        }
        self._lock = threading.Lock()

    def plan(self) -> domain.Edition:
        """The composed edition (read back from the database for a stored one)."""
        if self._plan is None:
            with self.ctx.db.reader() as session:
                row = edition_queries.get(session, self.edition_id or 0)
                assert row is not None
                plan = edition_queries.stored_plan(session, row)
            html, text = intro_from_markdown(self.intro)
            self._plan = replace(plan, intro_html=html, intro_text=text)
        return self._plan

    def template_for(self, excluded: tuple[str, ...]) -> MessageTemplate | None:
        """The message template for a reader's preferences; None when nothing is left."""
        if not excluded:
            return self._templates[variant_key(())]
        with self._lock:
            gone = set(excluded) & set(self.plan().section_names)
            key = variant_key(gone)
            if key not in self._templates:
                self._templates[key] = self._variant(key, gone)
            return self._templates[key]

    def _variant(self, key: str, gone: set[str]) -> MessageTemplate | None:
        if not gone:
            return self._templates[variant_key(())]
        rendered = None
        if self.edition_id is not None:
            with self.ctx.db.reader() as session:
                stored = edition_queries.get_variant(session, self.edition_id, key)
            if stored is not None:
                if not stored.articles:
                    return None
                rendered = replace(self.rendered, subject=stored.subject,
                                   preheader=stored.preheader, html=stored.html,
                                   text=stored.text, mjml="")
        if rendered is None:
            variant = drop_sections(self.plan(), gone)
            if not variant.is_empty:
                rendered = render_edition(variant, self.ctx.settings, self.ctx.templates,
                                          now=self.rendered_at, nonce=self.rendered.nonce)
            if self.edition_id is not None and self.persist:
                with self.ctx.db.session() as session:
                    edition_queries.save_variant(session, self.edition_id, key, rendered,
                                                 len(variant.articles))
        return self._template(rendered) if rendered is not None else None

    def _template(self, rendered: domain.RenderedEdition) -> MessageTemplate:
        subject = f"[TEST] {rendered.subject}" if self.test else None
        return self.ctx.message_template(rendered, subject=subject)

    def __call__(self, job: Job, when: datetime) -> OutgoingMessage:
        template = self.template_for(job.excluded)
        if template is None:
            raise Skip("the reader opted out of every section of this edition")
        recipient = self.ctx.recipient(job.subscriber_id, job.email, job.email_key, job.name,
                                       self.rendered.nonce, self.edition_id)
        return template.build(recipient, date=when)


# -- test sends and dry runs -------------------------------------------------------------------

def send_test(ctx: Context, period: domain.Period, address: str,
              transport: Transport, *, intro: str | None = None) -> SendOutcome:
    """Send one copy marked [TEST] to ``address``; the ledger is not touched."""
    ctx.signer  # noqa: B018 - a missing secret fails here, before any work is done
    target = normalise(address)
    with ctx.db.reader() as session:
        row = edition_queries.get_by_period(session, period.key)
        rendered = stored_rendering(row) if row is not None else None
        known = subscriber_queries.get_by_key(session, target.key)
        sub_id = known.id if known else 0
    if rendered is None:
        prepared = prepare(ctx, period, intro=intro)
        if prepared is None:
            return SendOutcome(SendState.NOTHING_NEW, period.key)
        rendered = prepared.rendered
    subject = f"[TEST] {rendered.subject}"
    ledger = _MemoryLedger([Job(1, sub_id, target.email, target.key, None, 1)])
    run = deliver(ledger, transport, Builder(ctx, rendered, test=True), clock=ctx.now,
                  retry_window=_NO_RETRY)
    state = SendState.COMPLETE if run.sent else SendState.INCOMPLETE
    return SendOutcome(state, period.key, None, subject, 1, run)


def dry_run(ctx: Context, period: domain.Period, *, intro: str | None = None) -> SendOutcome:
    """Compose, render and build every message the send would, without sending or recording."""
    ctx.signer  # noqa: B018 - a missing secret fails here, before any work is done
    with ctx.db.reader() as session:
        row = edition_queries.get_by_period(session, period.key)
        if row is not None and row.status == EditionStatus.SENT:
            return SendOutcome(SendState.ALREADY_SENT, period.key, row.id, row.subject)
    if row is not None:
        builder = Builder(ctx, stored_rendering(row), edition=row, persist=False)
    else:
        prepared = prepare(ctx, period, intro=intro)
        if prepared is None:
            return SendOutcome(SendState.NOTHING_NEW, period.key)
        builder = Builder(ctx, prepared.rendered, plan=prepared.plan)
    jobs = _confirmed_jobs(ctx)
    # Nothing is kept but counts: a dry run of a large list must not hold every message.
    transport = MemoryTransport(keep=False)
    run = deliver(_MemoryLedger(jobs), transport, builder, clock=ctx.now,
                  retry_window=_NO_RETRY)
    return SendOutcome(SendState.COMPLETE, period.key, None, builder.rendered.subject,
                       len(jobs), run)


_NO_RETRY = timedelta(0)


def _confirmed_jobs(ctx: Context) -> list[Job]:
    with ctx.db.reader() as session:
        return [
            Job(index, row.id, row.email, row.email_key, row.name, 1,
                tuple(row.excluded_sections or ()))
            for index, row in enumerate(
                subscriber_queries.iter_subscribers(session, SubscriberStatus.CONFIRMED), 1)
        ]


class _MemoryLedger:
    """A ledger over a fixed list of jobs, kept in memory (test sends, dry runs)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self._jobs: Iterator[Job] = iter(jobs)
        self._count = len(jobs)
        self.results: list[Result] = []

    def owed(self) -> int:
        return self._count - len(self.results)

    def active(self) -> bool:
        return True

    def claim(self, limit: int, now: datetime) -> list[Job]:
        return [job for _, job in zip(range(limit), self._jobs, strict=False)]

    def record(self, results: Sequence[Result], now: datetime) -> None:
        self.results.extend(results)

    def release(self, jobs: Sequence[Job], now: datetime) -> None:
        pass

    def renew(self, now: datetime) -> None:
        pass

    def next_retry(self) -> datetime | None:
        return None

    def finish_if_complete(self, now: datetime) -> bool:
        return all(r.status != DeliveryStatus.DEFERRED for r in self.results)


# -- workers -------------------------------------------------------------------------------------

def work(ctx: Context, *, stop: threading.Event, poll: float = 2.0,
         on_batch: Callable[[RunReport], None] | None = None,
         say: Callable[[str], None] = lambda line: None) -> int:
    """`digest worker`: join every edition being sent until ``stop``; returns how many
    messages this worker sent. On PostgreSQL any number of workers share the work; on
    SQLite a worker is the one sender."""
    ctx.signer  # noqa: B018 - a missing secret fails here, before anything is claimed
    sent = 0
    with _sending(ctx):
        say(f"worker {_sender_id()} ready; looking for editions every {poll:g} s")
        while not stop.is_set():
            with ctx.db.reader() as session:
                ids = [e for e in delivery_queries.sending_editions(session)
                       if delivery_queries.has_due(session, e, ctx.now())]
            worked = False
            for edition_id in ids:
                if stop.is_set():
                    break
                try:
                    outcome = _deliver(ctx, edition_id, ctx.transport(), stop, on_batch,
                                       resumed=True, wait=False)
                except (DigestError, SQLAlchemyError) as exc:
                    # Keep going: the database or the server may be back at the next look;
                    # anything this worker held is taken over when its lease runs out.
                    say(f"edition {edition_id}: {exc}".splitlines()[0])
                    continue
                if outcome.run is not None and outcome.run.handled:
                    worked = True
                    sent += outcome.run.sent
                    say(f"edition {outcome.period}: sent {outcome.run.sent}, deferred "
                        f"{outcome.run.deferred}, failed {outcome.run.failed}")
            if not worked:
                stop.wait(poll)
    return sent
