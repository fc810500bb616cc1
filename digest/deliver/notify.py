"""Short plain-text mails to the editors: an edition held, a run's summary, a preview to
approve. They go through the same transport as editions, never through the ledger."""

from __future__ import annotations

import secrets
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from ..config import Publication
from .message import OutgoingMessage
from .run import Transport
from .smtp import Outcome


def simple_message(publication: Publication, to: str, subject: str, body: str, *,
                   date: datetime, html: str | None = None, name: str | None = None,
                   sender: str | None = None) -> OutgoingMessage:
    """One message to one person (built with the email package: these are few)."""
    msg = EmailMessage()
    msg["From"] = formataddr((sender or publication.name, publication.from_address))
    msg["To"] = formataddr((name or "", to))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{secrets.token_hex(12)}@{publication.domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    if publication.reply_to:
        msg["Reply-To"] = publication.reply_to
    msg.set_content(body, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return OutgoingMessage(publication.from_address, to, data, msg["Message-ID"])


def notify_editors(publication: Publication, transport: Transport, subject: str,
                   body: str, *, date: datetime, html: str | None = None) -> list[str]:
    """Mail every editor; returns the addresses the server accepted."""
    accepted = []
    for editor in publication.editors:
        message = simple_message(publication, editor, subject, body, date=date, html=html,
                                 sender=f"{publication.name} (digest)")
        result = transport.send(message)
        if result.outcome is Outcome.SENT:
            accepted.append(editor)
    return accepted
