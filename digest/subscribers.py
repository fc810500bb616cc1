"""Subscribers: add, import, list, remove. Addresses are checked and stored normalised.

Imports stream the CSV in batches: a file of any size is read with flat memory,
every bad row is reported with its line number and reason, and every good row is
imported.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from email_validator import EmailNotValidError, validate_email

from .db import Database
from .errors import SubscriberError
from .models import Subscriber, SubscriberStatus
from .queries import subscribers as queries

IMPORT_BATCH = 1000


@dataclass(frozen=True)
class Address:
    """A checked address: as it will be written, and the key that makes it unique."""

    email: str
    key: str


def normalise(raw: str) -> Address:
    """Check an address's syntax (no DNS) and normalise it; SubscriberError if invalid."""
    text = (raw or "").strip()
    if not text:
        raise SubscriberError("empty email address")
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{text!r} is not a valid email address: {exc}") from None
    email = str(checked.normalized)
    return Address(email=email, key=email.casefold())


NAME_LENGTH = 200


def clean_name(raw: str | None) -> str | None:
    """A display name as it may go into a To: header: one line, no control characters."""
    if not raw:
        return None
    text = "".join(c if c.isprintable() else " " for c in raw)
    return " ".join(text.split())[:NAME_LENGTH] or None


@dataclass(frozen=True)
class SubscriberView:
    """A subscriber as listed and exported."""

    email: str
    name: str | None
    status: str
    origin: str
    created_at: datetime
    confirmed_at: datetime | None
    attributes: dict[str, Any]
    id: int = 0
    email_key: str = ""
    unsubscribed_at: datetime | None = None
    excluded_sections: tuple[str, ...] = ()
    consent: dict[str, Any] = field(default_factory=dict)
    bounce_count: int = 0

    @classmethod
    def of(cls, row: Subscriber) -> SubscriberView:
        """The view of a stored row."""
        return cls(row.email, row.name, row.status, row.origin, row.created_at,
                   row.confirmed_at, dict(row.attributes or {}), row.id, row.email_key,
                   row.unsubscribed_at, tuple(row.excluded_sections or ()),
                   dict(row.consent or {}), row.bounce_count)


def add(
    db: Database,
    email: str,
    *,
    now: datetime,
    name: str | None = None,
    status: SubscriberStatus = SubscriberStatus.CONFIRMED,
    origin: str = "cli",
) -> SubscriberView:
    """Add one subscriber; SubscriberError when the address is invalid or already known."""
    address = normalise(email)
    with db.session() as session:
        existing = queries.get_by_key(session, address.key)
        if existing is not None:
            raise SubscriberError(
                f"{address.email} is already a subscriber (status {existing.status})"
            )
        method = ("added by an administrator, who vouches for consent"
                  if status == SubscriberStatus.CONFIRMED
                  else "added by an administrator; asked to confirm by mail")
        row = Subscriber(
            email=address.email, email_key=address.key, name=clean_name(name),
            status=status, origin=origin, attributes={}, excluded_sections=[],
            consent=_consent(method, now, origin=origin), created_at=now,
            confirmed_at=now if status == SubscriberStatus.CONFIRMED else None,
        )
        session.add(row)
        session.flush()
        return SubscriberView.of(row)


def _consent(method: str, now: datetime, **details: str | None) -> dict[str, Any]:
    return {"method": method, "at": now.isoformat(),
            **{k: v for k, v in details.items() if v}}


@dataclass
class ImportReport:
    """What an import did: how many rows were added, and each bad row with its reason."""

    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """How many rows were not imported."""
        return len(self.problems)


def import_csv(
    db: Database,
    path: Path,
    *,
    now: datetime,
    status: SubscriberStatus = SubscriberStatus.CONFIRMED,
    on_new: Callable[[SubscriberView], None] | None = None,
) -> ImportReport:
    """Import a CSV with a header row holding ``email`` (and optionally ``name``); other
    columns are kept as attributes."""
    report = ImportReport()
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise SubscriberError(f"{path}: the file is empty; expected a header row "
                                  "with an 'email' column") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise SubscriberError(f"{path}:1: cannot read the header: {exc}") from None
        columns = [c.strip().lower() for c in header]
        if "email" not in columns:
            raise SubscriberError(
                f"{path}:1: no 'email' column in the header ({', '.join(header) or 'empty'})",
                hint="the first row must name the columns, e.g. email,name",
            )
        for batch in _batches(_rows(reader, columns, path, report)):
            added = _import_batch(db, batch, now, status, report, path.name)
            if on_new is not None:
                for view in added:
                    on_new(view)
    return report


@dataclass(frozen=True)
class _Row:
    line: int
    address: Address
    name: str | None
    attributes: dict[str, str]


def _rows(reader: Any, columns: list[str], path: Path, report: ImportReport) -> Iterator[_Row]:
    email_at = columns.index("email")
    name_at = columns.index("name") if "name" in columns else None
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            report.problems.append((reader.line_num, f"unreadable row: {exc}"))
            continue
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) <= email_at:
            report.problems.append((line, "missing the email column"))
            continue
        try:
            address = normalise(values[email_at])
        except SubscriberError as exc:
            report.problems.append((line, exc.message))
            continue
        attributes = {
            columns[i]: v.strip() for i, v in enumerate(values)
            if i < len(columns) and i not in (email_at, name_at) and columns[i] and v.strip()
        }
        name = values[name_at] if name_at is not None and name_at < len(values) else ""
        yield _Row(line, address, clean_name(name), attributes)


def _batches(rows: Iterator[_Row]) -> Iterator[list[_Row]]:
    batch: list[_Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _import_batch(
    db: Database, batch: list[_Row], now: datetime, status: SubscriberStatus,
    report: ImportReport, source: str,
) -> list[SubscriberView]:
    method = ("imported; the importer vouches for consent"
              if status == SubscriberStatus.CONFIRMED else "imported; asked to confirm by mail")
    consent = _consent(method, now, file=source)
    with db.session() as session:
        known = queries.existing_keys(session, (r.address.key for r in batch))
        fresh: dict[str, _Row] = {}
        for row in batch:
            if row.address.key in known:
                report.problems.append((row.line, f"{row.address.email} is already in the list "
                                                  f"(status {known[row.address.key]})"))
            elif row.address.key in fresh:
                report.problems.append((row.line, f"{row.address.email} appears twice "
                                                  f"(first on line {fresh[row.address.key].line})"))
            else:
                fresh[row.address.key] = row
        inserted = queries.insert_many(session, [
            {
                "email": r.address.email, "email_key": r.address.key, "name": r.name,
                "status": status, "origin": "import", "attributes": r.attributes,
                "excluded_sections": [], "consent": consent, "bounce_count": 0,
                "soft_bounces": 0, "created_at": now,
                "confirmed_at": now if status == SubscriberStatus.CONFIRMED else None,
            }
            for r in fresh.values()
        ])
        report.imported += len(inserted)
        if status != SubscriberStatus.PENDING or not inserted:
            return []
        return [SubscriberView.of(row) for row in queries.by_ids(session, inserted)]


def list_subscribers(
    db: Database, status: SubscriberStatus | None = None
) -> Iterator[SubscriberView]:
    """Every subscriber (of one status, if given), oldest first, streamed."""
    with db.reader() as session:
        for row in queries.iter_subscribers(session, status):
            yield SubscriberView.of(row)


def remove(db: Database, email: str) -> SubscriberView:
    """Erase a subscriber and their personal data; delivery counts stay, anonymous."""
    address = normalise(email)
    with db.session() as session:
        row = queries.get_by_key(session, address.key)
        if row is None:
            raise SubscriberError(f"{address.email} is not a subscriber")
        view = SubscriberView.of(row)
        queries.delete_subscriber(session, row.id)
        return view


def unsubscribe_address(db: Database, email: str, *, now: datetime) -> SubscriberView:
    """Unsubscribe by address (the CLI); SubscriberError when unknown."""
    address = normalise(email)
    with db.reader() as session:
        row = queries.get_by_key(session, address.key)
        subscriber_id = row.id if row is not None else None
    if subscriber_id is None or not unsubscribe(
            db, subscriber_id, now=now, how="by an administrator (digest subscribers unsubscribe)"):
        raise SubscriberError(f"{address.email} is not a subscriber")
    with db.reader() as session:
        found = queries.get_by_id(session, subscriber_id)
        assert found is not None
        return SubscriberView.of(found)


# -- the web flows ------------------------------------------------------------------------------

CONFIRM_RESEND_AFTER = timedelta(minutes=10)
ALREADY_NOTICE_AFTER = timedelta(hours=24)


class Notice(StrEnum):
    """Which mail, if any, a subscription request earns."""

    CONFIRM = "confirm"  # please confirm (new, pending, or back after leaving)
    ALREADY = "already"  # you are already subscribed
    NONE = "none"  # nothing: one was sent recently (no mail-bombing through the form)


def request_subscription(db: Database, email: str, *, now: datetime, name: str | None = None,
                         client: str | None = None) -> tuple[SubscriberView, Notice]:
    """Someone asked to subscribe on the web: store them as pending (or find them), and say
    which mail to send. The caller answers the same whatever the outcome."""
    address = normalise(email)
    with db.session() as session:
        row = queries.get_by_key(session, address.key)
        if row is None:
            row = Subscriber(
                email=address.email, email_key=address.key, name=clean_name(name),
                status=SubscriberStatus.PENDING, origin="web", attributes={},
                excluded_sections=[], created_at=now,
                consent=_consent("web form, double opt-in", now, requested_from=client),
            )
            session.add(row)
            session.flush()
        if row.status == SubscriberStatus.CONFIRMED:
            due = row.notice_sent_at is None or now - row.notice_sent_at >= ALREADY_NOTICE_AFTER
            notice = Notice.ALREADY if due else Notice.NONE
        else:
            if row.status != SubscriberStatus.PENDING:
                # Back after leaving (or bouncing): a new consent, confirmed like the first.
                row.status = SubscriberStatus.PENDING
                row.consent = {**(row.consent or {}), "requested_again_at": now.isoformat(),
                               "requested_again_from": client}
            due = row.notice_sent_at is None or now - row.notice_sent_at >= CONFIRM_RESEND_AFTER
            notice = Notice.CONFIRM if due else Notice.NONE
        if notice is not Notice.NONE:
            row.notice_sent_at = now
        return SubscriberView.of(row), notice


def find(db: Database, subscriber_id: int, address_hash: str) -> SubscriberView | None:
    """The subscriber a token names, if the token's address fingerprint still matches."""
    from .tokens import address_hash as fingerprint

    with db.reader() as session:
        row = queries.get_by_id(session, subscriber_id)
        if row is None or fingerprint(row.email_key) != address_hash:
            return None
        return SubscriberView.of(row)


def confirm(db: Database, subscriber_id: int, *, now: datetime,
            client: str | None = None) -> SubscriberView | None:
    """Confirm a pending subscriber (a confirmed one stays as they are); None if gone."""
    with db.session() as session:
        row = queries.get_by_id(session, subscriber_id)
        if row is None:
            return None
        if row.status == SubscriberStatus.PENDING:
            queries.set_status(session, row, SubscriberStatus.CONFIRMED, now)
            row.consent = {**(row.consent or {}), "confirmed_at": now.isoformat(),
                           "confirmed_from": client}
        return SubscriberView.of(row)


def unsubscribe(db: Database, subscriber_id: int, *, now: datetime, how: str) -> bool:
    """Unsubscribe the subscriber a valid token named; False if they are gone."""
    with db.session() as session:
        row = queries.get_by_id(session, subscriber_id)
        if row is None:
            return False
        if row.status != SubscriberStatus.UNSUBSCRIBED:
            queries.set_status(session, row, SubscriberStatus.UNSUBSCRIBED, now)
            row.consent = {**(row.consent or {}), "unsubscribed": how,
                           "unsubscribed_at": now.isoformat()}
        return True


def set_preferences(db: Database, subscriber_id: int, excluded: Iterable[str]) -> bool:
    """Store which sections a subscriber does not want; False if they are gone."""
    with db.session() as session:
        row = queries.get_by_id(session, subscriber_id)
        if row is None:
            return False
        row.excluded_sections = sorted(set(excluded))
        return True


EXPORT_FIELDS = ("email", "name", "status", "origin", "created_at", "confirmed_at",
                 "unsubscribed_at", "excluded_sections", "bounce_count", "consent", "attributes")


def export_csv(db: Database, out: TextIO) -> int:
    """Write every subscriber with all their fields as CSV; returns how many."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_FIELDS)
    count = 0
    for sub in list_subscribers(db):
        writer.writerow([
            sub.email, sub.name or "", sub.status, sub.origin, sub.created_at.isoformat(),
            sub.confirmed_at.isoformat() if sub.confirmed_at else "",
            sub.unsubscribed_at.isoformat() if sub.unsubscribed_at else "",
            ";".join(sub.excluded_sections), sub.bounce_count,
            json.dumps(sub.consent, ensure_ascii=False, sort_keys=True),
            json.dumps(sub.attributes, ensure_ascii=False, sort_keys=True),
        ])
        count += 1
    return count
