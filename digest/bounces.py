"""Bounces, complaints and mailed unsubscribe requests: read a mailbox, act on what it says.

What is recognised, and what it does:
- a delivery status notification (RFC 3464, multipart/report;
  report-type=delivery-status) that says a message failed permanently (status 5.x.x):
  a hard bounce. The delivery is marked failed with the diagnostic, the subscriber
  bounced: no edition goes to them again.
- a DSN for a temporary failure (4.x.x, or action "delayed"): a soft bounce. Three
  in a row — on consecutive editions sent to that subscriber — count as a hard one.
- an abuse report (RFC 5965 ARF, report-type=feedback-report): a complaint. The
  subscriber is marked complained: never mailed again.
- a mail to the unsubscribe address (the mailto: of List-Unsubscribe): the subscriber
  named by its tag is unsubscribed.

A mail is tied to its delivery by the VERP envelope sender it was returned to
(``bounces+<edition>-<subscriber>-<mac>@…``) or, failing that, by the Message-ID of
the original message quoted in the report. Matched mails are moved out of the way
(Maildir: the ``.Processed`` folder; IMAP: the processed folder); a mail that cannot
be matched is left where it is and reported.
"""

from __future__ import annotations

import email
import hmac
import imaplib
import mailbox
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select

from . import subscribers
from .app import Context
from .deliver.message import message_id
from .deliver.verp import read_token, tag_of
from .errors import DigestError
from .models import Delivery, DeliveryStatus, Edition, SubscriberStatus
from .queries import subscribers as subscriber_queries

SOFT_BOUNCES_TO_SUPPRESS = 3


class Kind(StrEnum):
    """What a returned mail is."""

    HARD = "hard bounce"
    SOFT = "soft bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe request"
    IGNORED = "not a bounce"  # e.g. a "delivered" or "relayed" DSN
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reading:
    """What one mail says and whom it is about."""

    kind: Kind
    subscriber_id: int | None = None
    edition_id: int | None = None
    detail: str = ""


def _msg(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _addresses(msg: Message, *names: str) -> list[str]:
    found = []
    for name in names:
        for value in msg.get_all(name) or []:
            found += re.findall(r"[^\s<>,;\"]+@[^\s<>,;\"]+", str(value))
    return found


def _report_parts(msg: Message, report_type: str) -> list[Message] | None:
    if msg.get_content_type() != "multipart/report":
        return None
    if str(msg.get_param("report-type", "")).lower() != report_type:
        return None
    return [p for p in msg.walk() if p is not msg]


def _original_headers(parts: list[Message]) -> Message | None:
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/rfc822-headers"):
            raw = part.get_payload(decode=True) or b""
            return BytesHeaderParser(policy=policy.default).parsebytes(bytes(raw))
    return None


def _status_blocks(parts: list[Message]) -> list[Message]:
    for part in parts:
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                blocks = [b for b in payload if isinstance(b, Message)]
                return blocks[1:] if len(blocks) > 1 else blocks
    return []


class Reader:
    """Reads returned mail for one configured digest (pure but for looking up Message-IDs)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.secret = ctx.settings.secret_key()
        self.bounces = ctx.settings.bounces
        self.domain = ctx.settings.publication.domain

    def _by_verp(self, addresses: list[str]) -> tuple[int, int] | None:
        if not self.bounces.address:
            return None
        for address in addresses:
            token = tag_of(address, self.bounces.address)
            ids = read_token(self.secret, "bounce", token, 2) if token else None
            if ids:
                return ids[0], ids[1]
        return None

    def _by_message_id(self, original: Message | None) -> tuple[int, int] | None:
        if original is None:
            return None
        quoted = str(original.get("Message-ID", "")).strip()
        found = re.fullmatch(rf"<([0-9a-f]{{16}})\.(\d+)\.[0-9a-f]+@{re.escape(self.domain)}>",
                             quoted)
        if not found:
            return None
        nonce, subscriber_id = found.group(1), int(found.group(2))
        with self.ctx.db.reader() as session:
            edition = session.scalar(select(Edition).where(Edition.nonce.startswith(nonce)))
        # The Message-ID carries a MAC: a reader of the edition cannot forge another's.
        if edition is None or not hmac.compare_digest(
                quoted, message_id(edition.nonce, subscriber_id, self.domain, self.secret)):
            return None
        return edition.id, subscriber_id

    def _identify(self, msg: Message, parts: list[Message],
                  extra: tuple[str, ...] = ()) -> tuple[int, int] | None:
        """(edition id, subscriber id) of the delivery a report is about."""
        headers = _addresses(msg, "Delivered-To", "X-Original-To", "Envelope-To", "To")
        return (self._by_verp([*headers, *extra])
                or self._by_message_id(_original_headers(parts)))

    def read(self, data: bytes) -> Reading:
        """What one mail is, and about whom."""
        msg = _msg(data)
        if self.bounces.unsubscribe_address:
            for address in _addresses(msg, "Delivered-To", "X-Original-To", "Envelope-To", "To"):
                token = tag_of(address, self.bounces.unsubscribe_address)
                ids = read_token(self.secret, "unsubscribe", token, 1) if token else None
                if ids:
                    return Reading(Kind.UNSUBSCRIBE, ids[0], None, f"mailed to {address}")
        parts = _report_parts(msg, "feedback-report")
        if parts is not None:
            report = next((p for p in parts if p.get_content_type() == "message/feedback-report"),
                          None)
            fields = _feedback_fields(report)
            feedback = fields.get("feedback-type", "abuse").lower()
            if feedback == "not-spam":
                return Reading(Kind.IGNORED, detail="a not-spam report")
            extra = tuple(v for k in ("original-mail-from", "original-rcpt-to")
                          for v in re.findall(r"[^\s<>]+@[^\s<>]+", fields.get(k, "")))
            ids = self._identify(msg, parts, extra)
            detail = f"feedback type {feedback}"
            if ids is None:
                return Reading(Kind.UNKNOWN, detail=f"complaint: {detail} (no delivery matched)")
            return Reading(Kind.COMPLAINT, ids[1], ids[0], detail)
        parts = _report_parts(msg, "delivery-status")
        if parts is None:
            return Reading(Kind.UNKNOWN, detail=f"not a report: {msg.get('Subject', '')!r}")
        kind, detail = _classify(_status_blocks(parts))
        if kind is Kind.IGNORED:
            return Reading(kind, detail=detail)
        ids = self._identify(msg, parts)
        if ids is None:
            return Reading(Kind.UNKNOWN, detail=f"{kind}: {detail} (no delivery matched)")
        return Reading(kind, ids[1], ids[0], detail)


def _feedback_fields(report: Message | None) -> dict[str, str]:
    if report is None:
        return {}
    payload = report.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return {k.lower(): str(v) for k, v in payload[0].items()}
    text = report.get_payload(decode=True) or b""
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(bytes(text))
    return {k.lower(): str(v) for k, v in parsed.items()}


def _classify(blocks: list[Message]) -> tuple[Kind, str]:
    worst: tuple[Kind, str] = (Kind.IGNORED, "no failed recipient")
    for block in blocks:
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        detail = f"{status} {diagnostic}".strip()
        if action == "failed" and status.startswith("5"):
            return Kind.HARD, detail
        if action in ("failed", "delayed") or status.startswith("4"):
            worst = (Kind.SOFT, detail)
    return worst


@dataclass
class BounceReport:
    """What processing a mailbox did."""

    counts: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def count(self, kind: Kind) -> None:
        """Count one mail of a kind."""
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1


def apply(ctx: Context, reading: Reading, now: datetime) -> bool:
    """Act on a recognised mail; False when it names no delivery or subscriber we have.

    Acting twice on the same report changes nothing more than acting once.
    """
    if reading.kind is Kind.UNSUBSCRIBE:
        return subscribers.unsubscribe(ctx.db, reading.subscriber_id or 0, now=now,
                                       how="by mail to the unsubscribe address")
    with ctx.db.session() as session:
        sub = subscriber_queries.get_by_id(session, reading.subscriber_id or 0)
        if sub is None:
            return False
        delivery = session.scalar(select(Delivery).where(
            Delivery.edition_id == reading.edition_id, Delivery.subscriber_id == sub.id))
        if delivery is None:
            return False  # a report about a message we never sent this subscriber
        if reading.kind is Kind.COMPLAINT:
            sub.status = SubscriberStatus.COMPLAINED
            return True
        if reading.kind is Kind.HARD:
            if delivery.bounce != "hard":
                delivery.bounce = "hard"
                delivery.status = DeliveryStatus.FAILED
                delivery.last_reply = f"bounced later: {reading.detail}"[:500]
                delivery.updated_at = now
                sub.bounce_count += 1
            if sub.status == SubscriberStatus.CONFIRMED:
                sub.status = SubscriberStatus.BOUNCED
            return True
        if delivery.bounce is None:
            delivery.bounce = "soft"
        # Three soft bounces in a row: on consecutive editions sent to this subscriber,
        # whatever order the reports arrive in.
        bounces = session.scalars(
            select(Delivery.bounce).where(Delivery.subscriber_id == sub.id,
                                          Delivery.status.in_((DeliveryStatus.SENT,
                                                               DeliveryStatus.FAILED)))
            .order_by(Delivery.edition_id)
        ).all()
        in_a_row = run = 0
        for bounce in bounces:
            run = run + 1 if bounce == "soft" else 0
            in_a_row = max(in_a_row, run)
        sub.soft_bounces = in_a_row
        if in_a_row >= SOFT_BOUNCES_TO_SUPPRESS and sub.status == SubscriberStatus.CONFIRMED:
            sub.status = SubscriberStatus.BOUNCED
            sub.bounce_count += 1
        return True


def process(ctx: Context, mails: Iterator[tuple[bytes, object]],
            done: Callable[[object], None], now: datetime) -> BounceReport:
    """Read each (bytes, key) mail; act on the ones recognised and hand their keys to
    ``done(key)``; leave the others, reported."""
    reader = Reader(ctx)
    report = BounceReport()
    for data, key in mails:
        reading = reader.read(data)
        report.count(reading.kind)
        if reading.kind is Kind.UNKNOWN:
            subject = _msg(data).get("Subject", "")
            report.unmatched.append(f"{key}: {reading.detail or subject}")
            continue
        if reading.kind is not Kind.IGNORED and not apply(ctx, reading, now):
            report.unmatched.append(f"{key}: {reading.kind}: {reading.detail} (no delivery "
                                    "of ours to that subscriber)")
            continue
        done(key)
    return report


def process_maildir(ctx: Context, path: Path, now: datetime) -> BounceReport:
    """Process every message of a Maildir; matched ones move to its .Processed folder."""
    if not (path / "new").is_dir() and not (path / "cur").is_dir():
        raise DigestError(f"{path} is not a Maildir (it has no new/ or cur/ folder)")
    box = mailbox.Maildir(str(path), factory=None, create=False)
    processed = box.add_folder("Processed") if "Processed" not in box.list_folders() else (
        box.get_folder("Processed"))

    def mails() -> Iterator[tuple[bytes, object]]:
        for key in list(box.keys()):
            yield box.get_bytes(key), key

    def done(key: object) -> None:
        processed.add(box.get_message(key))  # type: ignore[arg-type]
        box.remove(key)  # type: ignore[arg-type]

    return process(ctx, mails(), done, now)


def process_imap(ctx: Context, now: datetime) -> BounceReport:
    """Process the configured IMAP folder; matched mails move to "Processed"."""
    cfg = ctx.settings.bounces
    assert cfg.imap_host and cfg.imap_user
    try:
        client: imaplib.IMAP4
        if cfg.imap_security == "ssl":
            client = imaplib.IMAP4_SSL(cfg.imap_host, cfg.imap_port, timeout=30)
        else:
            client = imaplib.IMAP4(cfg.imap_host, cfg.imap_port, timeout=30)
            if cfg.imap_security == "starttls":
                client.starttls()
        client.login(cfg.imap_user, ctx.settings.imap_password())
        client.create("Processed")  # fails harmlessly when it exists
        status, _ = client.select(cfg.imap_folder)
        if status != "OK":
            raise DigestError(f"IMAP folder {cfg.imap_folder!r} cannot be opened")
        _, found = client.uid("SEARCH", "ALL")
        uids = found[0].split() if found and found[0] else []

        def mails() -> Iterator[tuple[bytes, object]]:
            for uid in uids:
                _, data = client.uid("FETCH", uid, "(RFC822)")
                raw = next((part[1] for part in data if isinstance(part, tuple)), b"")
                yield bytes(raw), uid.decode()

        def done(uid: object) -> None:
            client.uid("COPY", str(uid), "Processed")
            client.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")

        report = process(ctx, mails(), done, now)
        client.expunge()
        client.logout()
        return report
    except (OSError, imaplib.IMAP4.error) as exc:
        raise DigestError(f"IMAP {cfg.imap_host}:{cfg.imap_port}: {exc}") from None

