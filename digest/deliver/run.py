"""The send pipeline: claim → build → send → record, the same for one recipient or a million.

It knows a Ledger (where deliveries are owed and recorded) and a Transport (where
messages go) only through the two small interfaces below; the SQL ledger lives in
digest/queries/deliveries.py, the transports in digest/deliver/smtp.py.

How one run works: the main thread claims batches of due deliveries (they become
``sending``, with a lease, in one transaction) and puts them on a work queue;
``max_connections`` sender threads take jobs, build each message by substitution
and hand it to the transport; the main thread records the answers in groups, one
transaction per group, and renews the leases of what it still holds.

The crash guarantee: a sender must take a permit before handing a message over,
and a permit is given back only once that message's result is committed. There
are 2 × max_connections permits, so a process killed at any moment leaves at
most 2 × max_connections messages sent but not recorded. Those rows are still
``sending``; when their lease runs out (at once, for a new run on SQLite) they
are sent again, with the same Message-ID. Claimed rows that were never sent are
simply sent later: they are not duplicates.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..models import DeliveryStatus
from .message import OutgoingMessage
from .smtp import Outcome, SendResult

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=1)
DEFAULT_RETRY_WINDOW = timedelta(minutes=10)
DEFAULT_LEASE = timedelta(seconds=30)
RECORD_EVERY = 0.05  # seconds: how long results may wait to be grouped into one commit


@dataclass(frozen=True)
class Job:
    """One claimed delivery: who gets which copy."""

    delivery_id: int
    subscriber_id: int
    email: str
    email_key: str
    name: str | None
    attempts: int  # including this one
    excluded: tuple[str, ...] = ()  # sections the subscriber opted out of


class Skip(Exception):
    """Raised by a message builder when a job has nothing to send (its reader opted out
    of every section of the edition); the delivery becomes ``suppressed``."""


@dataclass(frozen=True)
class Result:
    """What happened to one job, for the ledger."""

    delivery_id: int
    subscriber_id: int
    status: DeliveryStatus
    reply: str | None
    retry_at: datetime | None = None
    bounced: bool = False  # a permanent refusal of the address: never mail it again


class Ledger(Protocol):
    """Where deliveries are owed and recorded (see queries.deliveries.SqlLedger)."""

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Mark up to ``limit`` due deliveries as sending and return them (none when the
        edition is not being sent, e.g. paused)."""

    def record(self, results: Sequence[Result], now: datetime) -> None:
        """Store the results of sent jobs in one transaction."""

    def release(self, jobs: Sequence[Job], now: datetime) -> None:
        """Give back claimed jobs that were not sent (a stop): due again at once."""

    def renew(self, now: datetime) -> None:
        """Extend the lease of every job this sender still holds."""

    def next_retry(self) -> datetime | None:
        """When the earliest deferred delivery is due, if any is."""

    def owed(self) -> int:
        """How many deliveries are not final yet."""

    def active(self) -> bool:
        """Whether the edition is being sent (not paused or cancelled)."""

    def finish_if_complete(self, now: datetime) -> bool:
        """Mark the edition sent when every delivery is final; True when it is."""


class Transport(Protocol):
    """Where messages go (see smtp.SMTPTransport, smtp.MemoryTransport)."""

    @property
    def concurrency(self) -> int:
        """How many messages may be in flight at once."""

    @property
    def where(self) -> str:
        """host:port (or another name), for messages."""

    def check(self) -> None:
        """Fail early (DeliveryError) when the server cannot be reached."""

    def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; never raises for a server's refusal."""

    def close(self) -> None:
        """Release connections."""


@dataclass
class RunReport:
    """What one delivery run did."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    complete: bool = False
    stopped: bool = False
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    max_unrecorded: int = 0  # the most messages ever sent but not yet recorded at once
    total: int = 0  # deliveries owed when the run started

    @property
    def handled(self) -> int:
        """How many deliveries this run finished or deferred."""
        return self.sent + self.deferred + self.failed + self.suppressed

    def add(self, job: Job, result: Result) -> None:
        """Count one result."""
        if result.status == DeliveryStatus.SENT:
            self.sent += 1
        elif result.status == DeliveryStatus.SUPPRESSED:
            self.suppressed += 1
        elif result.status == DeliveryStatus.DEFERRED:
            self.deferred += 1
        elif result.status == DeliveryStatus.FAILED:
            self.failed += 1
            self.failures.append((job.email, result.reply or ""))


@dataclass(frozen=True)
class Retry:
    """When deferred deliveries are tried again."""

    first: timedelta = FIRST_RETRY
    longest: timedelta = MAX_RETRY_DELAY
    window: timedelta = DEFAULT_RETRY_WINDOW  # how long one run waits for them

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff: ``first`` after the first attempt, doubling, capped."""
        delay: timedelta = self.first * (2 ** max(0, attempts - 1))
        return min(delay, self.longest)


def to_result(job: Job, sent: SendResult, now: datetime, retry: Retry = Retry()) -> Result:
    """Turn the server's answer into a ledger result."""
    if sent.outcome is Outcome.SENT:
        return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.SENT, sent.summary)
    if sent.outcome is Outcome.PERMANENT and sent.stage in ("rcpt", "data"):
        return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.FAILED, sent.summary,
                      bounced=True)
    if sent.outcome is Outcome.PERMANENT and sent.stage == "address":
        # The address cannot be written in this SMTP session (not the reader's fault).
        return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.FAILED, sent.summary)
    return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.DEFERRED, sent.summary,
                  retry_at=now + retry.delay(job.attempts))


def _now() -> datetime:
    return datetime.now(UTC)


Progress = Callable[[RunReport], None]


class _Run:
    """One delivery run's moving parts (see the module docstring)."""

    def __init__(self, ledger: Ledger, transport: Transport,
                 build: Callable[[Job, datetime], OutgoingMessage], *, batch_size: int,
                 retry: Retry, clock: Callable[[], datetime], stop: threading.Event,
                 on_progress: Progress | None, lease: timedelta) -> None:
        self.ledger, self.transport, self.build = ledger, transport, build
        self.batch_size, self.retry, self.clock, self.stop = batch_size, retry, clock, stop
        self.on_progress, self.lease = on_progress, lease
        self.report = RunReport()
        senders = transport.concurrency
        self.window = 2 * senders
        self.permits = threading.Semaphore(self.window)
        self.halt = threading.Event()  # set when the run ends for any reason
        self.work: queue.Queue[Job | None] = queue.Queue()
        self.results: queue.Queue[tuple[Job, Result]] = queue.Queue()
        self.unrecorded = 0
        self.lock = threading.Lock()
        self.in_hand = 0  # claimed and not yet recorded (queued or in flight)
        self.threads = [threading.Thread(target=self._sender, name=f"digest-send-{n}",
                                         daemon=True) for n in range(senders)]

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.halt.is_set()

    def _take_permit(self) -> bool:
        """Wait for a permit to send; False when the run stops meanwhile."""
        while not self.permits.acquire(timeout=0.1):
            if self._stopping():
                return False
        if self._stopping():
            self.permits.release()
            return False
        return True

    def _sender(self) -> None:
        while True:
            job = self.work.get()
            if job is None:
                return
            if not self._take_permit():
                self.results.put((job, _UNSENT))
                continue
            with self.lock:
                self.unrecorded += 1
                self.report.max_unrecorded = max(self.report.max_unrecorded, self.unrecorded)
            try:
                message = self.build(job, self.clock())
                result = to_result(job, self.transport.send(message), self.clock(), self.retry)
            except Skip as skipped:
                result = Result(job.delivery_id, job.subscriber_id, DeliveryStatus.SUPPRESSED,
                                f"not sent: {skipped}")
            except Exception as exc:  # noqa: BLE001 - a sender must always report back
                # Whatever went wrong with this one message, the run must not wait for it
                # for ever: it is deferred with the error, and tried again later.
                result = Result(job.delivery_id, job.subscriber_id, DeliveryStatus.DEFERRED,
                                f"internal error: {type(exc).__name__}: {exc}"[:500],
                                retry_at=self.clock() + self.retry.delay(job.attempts))
            self.results.put((job, result))

    def _record(self, wait: float) -> int:
        """Commit the results that arrived (waiting up to ``wait`` for the first)."""
        batch: list[tuple[Job, Result]] = []
        try:
            batch.append(self.results.get(timeout=wait))
            while True:
                batch.append(self.results.get_nowait())
        except queue.Empty:
            pass
        if not batch:
            return 0
        sent = [(job, result) for job, result in batch if result is not _UNSENT]
        unsent = [job for job, result in batch if result is _UNSENT]
        now = self.clock()
        if sent:
            self.ledger.record([result for _, result in sent], now)
            for job, result in sent:
                self.report.add(job, result)
            with self.lock:
                self.unrecorded -= len(sent)
            for _ in sent:
                self.permits.release()
        if unsent:
            self.ledger.release(unsent, now)
        self.in_hand -= len(batch)
        if self.on_progress:
            self.on_progress(self.report)
        return len(batch)

    def run(self, deadline: datetime) -> RunReport:
        for thread in self.threads:
            thread.start()
        renewed = time.monotonic()
        next_claim = 0.0  # after a claim that found nothing, wait a little before the next
        try:
            while True:
                if self.stop.is_set() and self.in_hand == 0:
                    break
                if (not self.stop.is_set() and self.in_hand < self.batch_size
                        and (self.in_hand == 0 or time.monotonic() >= next_claim)):
                    jobs = self.ledger.claim(self.batch_size, self.clock())
                    for job in jobs:
                        self.work.put(job)
                    self.in_hand += len(jobs)
                    next_claim = time.monotonic() + (0 if jobs else 1.0)
                if self.in_hand:
                    if not all(thread.is_alive() for thread in self.threads):
                        raise RuntimeError("a sender thread died; stopping the run")
                    self._record(RECORD_EVERY)
                    if time.monotonic() - renewed > self.lease.total_seconds() / 3:
                        self.ledger.renew(self.clock())
                        renewed = time.monotonic()
                    continue
                if self.stop.is_set():
                    break
                if self.ledger.finish_if_complete(self.clock()):
                    self.report.complete = True
                    break
                if not self.ledger.active():
                    break
                due = self.ledger.next_retry()
                if due is None:
                    # Owed but not claimable: another sender is claiming it this moment.
                    if self.clock() >= deadline:
                        break
                    due = self.clock() + timedelta(seconds=0.2)
                if due > deadline:
                    break
                self.stop.wait(max(0.05, min((due - self.clock()).total_seconds(), 5.0)))
        finally:
            self.halt.set()
            for _ in self.threads:
                self.work.put(None)
            for thread in self.threads:
                thread.join()
            while self.in_hand and self._record(0):
                pass
        self.report.stopped = self.stop.is_set() and not self.report.complete
        return self.report


_UNSENT = Result(0, 0, DeliveryStatus.PENDING, None)  # a job given back, not sent


def deliver(
    ledger: Ledger,
    transport: Transport,
    build: Callable[[Job, datetime], OutgoingMessage],
    *,
    batch_size: int | None = None,
    retry: Retry | None = None,
    retry_window: timedelta | None = None,
    clock: Callable[[], datetime] = _now,
    stop: threading.Event | None = None,
    on_progress: Progress | None = None,
    lease: timedelta = DEFAULT_LEASE,
) -> RunReport:
    """Send every owed delivery of one edition; return when all are final, when the retry
    window has passed with some still deferred, or when ``stop`` is set (after recording
    what is in flight and giving back what was claimed but not sent)."""
    started = time.monotonic()
    retry = retry or Retry()
    if retry_window is not None:
        retry = Retry(retry.first, retry.longest, retry_window)
    # Large claims mean few claim transactions; the lease is renewed while they are worked
    # through, and nothing claimed-but-unsent is ever a duplicate.
    size = batch_size or max(50 * transport.concurrency, 200)
    transport.check()
    run = _Run(ledger, transport, build, batch_size=size, retry=retry, clock=clock,
               stop=stop or threading.Event(), on_progress=on_progress, lease=lease)
    run.report.total = ledger.owed()
    if on_progress:
        on_progress(run.report)
    try:
        report = run.run(clock() + retry.window)
    finally:
        transport.close()
    report.seconds = time.monotonic() - started
    return report
