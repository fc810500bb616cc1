"""The send pipeline: claim → build → send → record, the same for one recipient or a million.

It knows a Ledger (where deliveries are owed and recorded) and a Transport (where
messages go) only through the two small interfaces below; the SQL ledger lives in
digest/queries/deliveries.py, the transports in digest/deliver/smtp.py.

Guarantee: a delivery is marked ``sending`` (with a lease) in the ledger before its
message leaves, and its result is recorded after the server answered. A process
killed in between leaves at most one claimed batch (2 × max_connections messages)
sent but unrecorded; the next run sends those again, with the same Message-ID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..models import DeliveryStatus
from .message import OutgoingMessage
from .smtp import Outcome, SendResult

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=1)
DEFAULT_RETRY_WINDOW = timedelta(minutes=10)


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
        """Mark up to ``limit`` due deliveries as sending and return them."""

    def record(self, results: Sequence[Result], now: datetime) -> None:
        """Store the results of sent jobs in one transaction."""

    def next_retry(self) -> datetime | None:
        """When the earliest deferred delivery is due, if any is."""

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


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff: 30 s after the first attempt, doubling, at most an hour."""
    delay: timedelta = FIRST_RETRY * (2 ** max(0, attempts - 1))
    return min(delay, MAX_RETRY_DELAY)


def to_result(job: Job, sent: SendResult, now: datetime) -> Result:
    """Turn the server's answer into a ledger result."""
    if sent.outcome is Outcome.SENT:
        return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.SENT, sent.summary)
    if sent.outcome is Outcome.PERMANENT and sent.stage in ("rcpt", "data"):
        return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.FAILED, sent.summary,
                      bounced=True)
    return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.DEFERRED, sent.summary,
                  retry_at=now + retry_delay(job.attempts))


def _now() -> datetime:
    return datetime.now(UTC)


def deliver(
    ledger: Ledger,
    transport: Transport,
    build: Callable[[Job, datetime], OutgoingMessage],
    *,
    batch_size: int | None = None,
    retry_window: timedelta = DEFAULT_RETRY_WINDOW,
    clock: Callable[[], datetime] = _now,
    stop: threading.Event | None = None,
    on_batch: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """Send every owed delivery of one edition; return when all are final, the retry
    window has passed with some still deferred, or ``stop`` is set (after the batch)."""
    started = time.monotonic()
    report = RunReport()
    stop = stop or threading.Event()
    size = batch_size or 2 * transport.concurrency
    deadline = clock() + retry_window
    transport.check()

    def one(job: Job) -> Result:
        when = clock()
        try:
            message = build(job, when)
        except Skip as skipped:
            return Result(job.delivery_id, job.subscriber_id, DeliveryStatus.SUPPRESSED,
                          f"not sent: {skipped}")
        return to_result(job, transport.send(message), clock())

    try:
        with ThreadPoolExecutor(max_workers=transport.concurrency,
                                thread_name_prefix="digest-send") as pool:
            while not stop.is_set():
                jobs = ledger.claim(size, clock())
                if not jobs:
                    if ledger.finish_if_complete(clock()):
                        report.complete = True
                        break
                    due = ledger.next_retry()
                    if due is None or due > deadline:
                        break
                    stop.wait(max(0.0, min((due - clock()).total_seconds(), 5.0)))
                    continue
                results = list(pool.map(one, jobs))
                ledger.record(results, clock())
                for job, result in zip(jobs, results, strict=True):
                    report.add(job, result)
                if on_batch:
                    on_batch(report)
    finally:
        transport.close()
    report.stopped = stop.is_set() and not report.complete
    report.seconds = time.monotonic() - started
    return report
