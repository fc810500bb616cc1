"""Rendered edition → one MIME message per recipient, by byte substitution.

The expensive work is done once per edition in ``MessageTemplate``: both bodies
are quoted-printable encoded, with CRLF line endings and no line starting with a
dot, so the bytes can go to the SMTP server as they are; the shared headers are
folded and encoded. Each recipient's message is then those bytes with the
personal markers (address, unsubscribe and preferences links) replaced, plus the
few headers that differ (To, Date, Message-ID, List-Unsubscribe). Nothing is
re-rendered and no ``EmailMessage`` is built per recipient.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from ..config import Publication
from ..domain import Personal, RenderedEdition

MAX_LINE = 76


def qp_encode(text: str) -> bytes:
    """Quoted-printable (RFC 2045) of UTF-8 text with CRLF line breaks.

    Physical lines stay within 76 characters, trailing white space is encoded, and a
    line never starts with ``.`` (it is written ``=2E``), so SMTP needs no dot-stuffing.
    """
    out = bytearray()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines):
        if number:
            out += b"\r\n"
        data = line.encode("utf-8")
        column = 0
        last = len(data) - 1
        for index, byte in enumerate(data):
            if (33 <= byte <= 126 and byte != 61) or (byte in (9, 32) and index != last):
                token = bytes((byte,))
            else:
                token = b"=%02X" % byte
            if column + len(token) > MAX_LINE - 1:
                out += b"=\r\n"
                column = 0
            if column == 0 and token == b".":
                token = b"=2E"
            out += token
            column += len(token)
    return bytes(out)


def _fold(name: str, value: str) -> bytes:
    """A free-text header (Subject): folded at spaces, RFC 2047-encoded when not ASCII.

    (email.policy's folder moves a value that starts with "[" onto a continuation line,
    so a "[TEST] …" subject would come out with a leading space.)
    """
    value = " ".join(value.split())  # no line breaks from data can reach the header
    if not value.isascii():
        encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n".encode("ascii")
    lines = [f"{name}:"]
    for word in value.split(" "):
        if len(lines[-1]) + 1 + len(word) > 78 and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + word
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _header(name: str, value: str) -> bytes:
    """A header whose value is already in wire form (addresses, URLs, ids): never folded,
    because folding would encode a long URL into something no client can use."""
    line = f"{name}: {value}\r\n"
    if len(line) > 998:
        raise ValueError(f"{name} header longer than SMTP allows")
    return line.encode("utf-8")


def _address(name: str | None, email: str) -> str:
    # A name never carries a line break into a header, whatever was stored.
    name = " ".join((name or "").split())
    if email.isascii():
        return formataddr((name, email), charset="utf-8")
    # An internationalised address (RFC 6532) goes as UTF-8; the name is encoded as usual.
    if not name:
        return email
    shown = formataddr((name, "x@x"), charset="utf-8").rsplit(" <", 1)[0]
    return f"{shown} <{email}>"


@dataclass(frozen=True)
class _Slot:
    """Where one personal value goes, and how it is written there."""

    field: str
    escape: Callable[[str], str]


@dataclass(frozen=True)
class OutgoingMessage:
    """One message, ready for the SMTP envelope."""

    mail_from: str
    recipient: str
    data: bytes
    message_id: str


@dataclass(frozen=True)
class Recipient:
    """Who gets one copy, and their personal values."""

    email: str
    name: str | None
    personal: Personal
    message_id: str
    return_path: str | None = None  # the envelope sender (VERP), when bounces are read
    unsubscribe_mailto: str | None = None  # only when that mailbox is processed


SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                  b"content-type", b"reply-to", b"list-id", b"list-unsubscribe",
                  b"list-unsubscribe-post")


class DkimSigner:
    """Signs messages with dkimpy (relaxed/relaxed); the key is read once."""

    def __init__(self, domain: str, selector: str, key: bytes) -> None:
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.key = key

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header in front."""
        import dkim

        signature = dkim.sign(data, self.selector, self.domain, self.key,
                              canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=list(SIGNED_HEADERS))
        return bytes(signature) + data


def _identity(value: str) -> str:
    return value


class MessageTemplate:
    """An edition's message with holes for each recipient; built once per edition."""

    def __init__(
        self,
        rendered: RenderedEdition,
        publication: Publication,
        *,
        subject: str | None = None,
        list_id: str | None = None,
        envelope_from: str | None = None,
        dkim: DkimSigner | None = None,
    ) -> None:
        self.envelope_from = envelope_from or publication.from_address
        self.dkim = dkim
        markers = rendered.markers
        boundary = f"=_digest_{rendered.nonce}"
        head = [
            _header("From", _address(publication.name, publication.from_address)),
            _fold("Subject", subject if subject is not None else rendered.subject),
            _header("MIME-Version", "1.0"),
            _header("List-Id", list_id or _list_id(publication)),
            _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            _header("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        if publication.reply_to:
            head.insert(1, _header("Reply-To", publication.reply_to))
        self._head = b"".join(head)
        body = (
            f"\r\n--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode("ascii")
        chunks: list[bytes | _Slot] = [b"\r\n" + body]
        chunks += self._encode_part(rendered.text, markers, _identity)
        chunks.append((
            f"\r\n--{boundary}\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode("ascii"))
        chunks += self._encode_part(rendered.html, markers, html.escape)
        chunks.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
        self._chunks = _merge(chunks)

    @staticmethod
    def _encode_part(
        text: str, markers: Personal, escape: Callable[[str], str]
    ) -> list[bytes | _Slot]:
        by_marker = {marker: name for name, marker in markers.items()}
        pattern = "(" + "|".join(re.escape(m) for m in by_marker) + ")"
        pieces = re.split(pattern, text)
        chunks: list[bytes | _Slot] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                chunks.append(_Slot(by_marker[piece], escape))
                continue
            encoded = qp_encode(piece)
            followed_by_slot = index + 1 < len(pieces)
            # A value starts on a fresh physical line, so its own encoding can wrap freely.
            if followed_by_slot and encoded and not encoded.endswith(b"\r\n"):
                encoded += b"=\r\n"
            chunks.append(encoded)
        return chunks

    def build(self, recipient: Recipient, *, date: datetime) -> OutgoingMessage:
        """The complete message for one recipient, dated ``date`` (the send time)."""
        values = dict(recipient.personal.items())
        unsubscribe = f"<{recipient.personal.unsubscribe_url}>"
        if recipient.unsubscribe_mailto:
            unsubscribe += f", <mailto:{recipient.unsubscribe_mailto}?subject=unsubscribe>"
        parts = [
            _header("Date", format_datetime(date)),
            _header("Message-ID", recipient.message_id),
            _header("To", _address(recipient.name, recipient.email)),
            _header("List-Unsubscribe", unsubscribe),
            self._head,
        ]
        for chunk in self._chunks:
            if isinstance(chunk, bytes):
                parts.append(chunk)
            else:
                parts.append(qp_encode(chunk.escape(values[chunk.field])) + b"=\r\n")
        data = b"".join(parts)
        if self.dkim is not None:
            data = self.dkim.sign(data)
        return OutgoingMessage(
            mail_from=recipient.return_path or self.envelope_from,
            recipient=recipient.email,
            data=data,
            message_id=recipient.message_id,
        )


def _merge(chunks: list[bytes | _Slot]) -> list[bytes | _Slot]:
    merged: list[bytes | _Slot] = []
    for chunk in chunks:
        if isinstance(chunk, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += chunk
        else:
            merged.append(chunk)
    return merged


def _list_id(publication: Publication) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", publication.name.lower()).strip("-") or "digest"
    return _address(publication.name, f"{label}.{publication.domain}")


def message_id(nonce: str, subscriber_id: int, domain: str, secret: str = "") -> str:
    """The Message-ID of one edition for one subscriber: the same on every retry.

    It carries a MAC (with the signing secret), so a report that quotes it can be tied
    to its delivery without letting anyone who read the edition forge one for another
    subscriber."""
    mac = hmac.new(secret.encode(), f"{nonce}.{subscriber_id}".encode(),
                   hashlib.sha256).hexdigest()[:10]
    return f"<{nonce[:16]}.{subscriber_id}.{mac}@{domain}>"
