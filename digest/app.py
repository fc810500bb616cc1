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
from .domain import Personal
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
    def signer(self) -> Signer:
        """Signs and checks link tokens; needs the secret from the environment."""
        return Signer(self.settings.secret_key())

    @cached_property
    def templates(self) -> jinja2.Environment:
        """The email templates (the editor's folder first, then the packaged ones)."""
        return environment(self.settings.digest.templates)

    def now(self) -> datetime:
        """The current time from this context's clock."""
        return self.clock()

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
