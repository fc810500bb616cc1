"""Subscribers: add, import, list, remove. Addresses are checked and stored normalised.

Imports stream the CSV in batches: a file of any size is read with flat memory,
every bad row is reported with its line number and reason, and every good row is
imported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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

    @classmethod
    def of(cls, row: Subscriber) -> SubscriberView:
        """The view of a stored row."""
        return cls(row.email, row.name, row.status, row.origin, row.created_at,
                   row.confirmed_at, dict(row.attributes or {}))


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
        row = Subscriber(
            email=address.email, email_key=address.key, name=(name or "").strip() or None,
            status=status, origin=origin, attributes={}, excluded_sections=[],
            created_at=now,
            confirmed_at=now if status == SubscriberStatus.CONFIRMED else None,
        )
        session.add(row)
        session.flush()
        return SubscriberView.of(row)


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
            _import_batch(db, batch, now, status, report)
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
        name = values[name_at].strip() if name_at is not None and name_at < len(values) else ""
        yield _Row(line, address, name or None, attributes)


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
    report: ImportReport,
) -> None:
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
        report.imported += queries.insert_many(session, [
            {
                "email": r.address.email, "email_key": r.address.key, "name": r.name,
                "status": status, "origin": "import", "attributes": r.attributes,
                "excluded_sections": [], "bounce_count": 0, "created_at": now,
                "confirmed_at": now if status == SubscriberStatus.CONFIRMED else None,
            }
            for r in fresh.values()
        ])


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
