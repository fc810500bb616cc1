"""What every driver (CLI, scheduler, web app) needs: settings, the database, a clock,
the signer and the templates, opened lazily and once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import jinja2

from .config import Settings
from .db import Database
from .deliver.message import DkimSigner, MessageTemplate, Recipient, message_id
from .deliver.smtp import SMTPTransport
from .deliver.verp import make_token, tagged
from .domain import Personal, RenderedEdition
from .pacing import SharedRateLimiter
from .render import environment
from .tokens import Purpose, Signer


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass
class Context:
    """One configured digest: settings plus lazily opened resources."""

    settings: Settings
    clock: Callable[[], datetime] = field(default=utc_now)

    @cached_property
    def db(self) -> Database:
        """The database, migrated on first use."""
        return Database(self.settings.database_url)

    @cached_property
    def secret(self) -> str:
        """The signing secret, read (and checked) once."""
        return self.settings.secret_key()

    @cached_property
    def signer(self) -> Signer:
        """Signs and checks link tokens; needs the secret from the environment."""
        return Signer(self.secret)

    @cached_property
    def templates(self) -> jinja2.Environment:
        """The email templates (the editor's folder first, then the packaged ones)."""
        return environment(self.settings.digest.templates)

    def now(self) -> datetime:
        """The current time from this context's clock."""
        return self.clock()

    def transport(self) -> SMTPTransport:
        """A new SMTP connection pool, paced by the rate shared with every other sender."""
        smtp = self.settings.smtp
        limiter = SharedRateLimiter(self.db, smtp.rate_per_second) if (
            smtp.rate_per_second > 0) else None
        return SMTPTransport(smtp, self.settings.smtp_password(), limiter=limiter)

    @cached_property
    def dkim(self) -> DkimSigner | None:
        """The DKIM signer, when [dkim] is configured (the key is read once)."""
        cfg = self.settings.dkim
        if cfg is None:
            return None
        return DkimSigner(cfg.domain, cfg.selector, cfg.private_key_path.read_bytes())

    def message_template(self, rendered: RenderedEdition, *,
                         subject: str | None = None) -> MessageTemplate:
        """The per-edition message template, signed when DKIM is configured."""
        return MessageTemplate(rendered, self.settings.publication, subject=subject,
                               dkim=self.dkim)

    def recipient(self, subscriber_id: int, email: str, email_key: str, name: str | None,
                  nonce: str, edition_id: int | None = None) -> Recipient:
        """One reader's copy: links, Message-ID, and the return addresses that identify it."""
        bounces = self.settings.bounces
        secret = self.secret
        return_path = None
        if bounces.address and edition_id is not None:
            return_path = tagged(bounces.address,
                                 make_token(secret, "bounce", edition_id, subscriber_id))
        mailto = None
        if bounces.unsubscribe_address:
            mailto = tagged(bounces.unsubscribe_address,
                            make_token(secret, "unsubscribe", subscriber_id))
        return Recipient(email, name, self.personal_links(subscriber_id, email, email_key),
                         message_id(nonce, subscriber_id, self.settings.publication.domain,
                                    secret),
                         return_path=return_path, unsubscribe_mailto=mailto)

    def personal_links(self, subscriber_id: int, email: str, email_key: str) -> Personal:
        """One subscriber's address and signed links."""
        base = self.settings.web.base_url
        return Personal(
            email=email,
            unsubscribe_url=f"{base}/unsubscribe/"
            + self.signer.make(Purpose.UNSUBSCRIBE, subscriber_id, email_key),
            preferences_url=f"{base}/preferences/"
            + self.signer.make(Purpose.PREFERENCES, subscriber_id, email_key),
        )

    def close(self) -> None:
        """Release the database connections, if they were opened."""
        if "db" in self.__dict__:
            self.db.dispose()
