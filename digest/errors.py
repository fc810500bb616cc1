"""The one exception tree of digest.

Every error a user can cause or fix is a DigestError with a message that names
the thing at fault (file, key, address, source) and, where there is one, a hint
that says what to do. The CLI prints ``error: <message>`` and the hint, and exits
with ``exit_code``; the web app shows a status page. Anything else escaping is a
bug in digest.

    DigestError                 exit 1
    ├── ConfigError             config.toml or the environment is wrong (exit 2)
    ├── DatabaseError           the database cannot be opened or migrated
    ├── SourceError             a source cannot be fetched or read
    ├── TemplateError           the email templates cannot be rendered
    ├── SubscriberError         an address is invalid, unknown or a duplicate
    ├── EditionError            an edition cannot be prepared, or is in the wrong state
    ├── DeliveryError           the SMTP server cannot be reached or refuses us
    └── LockedError             another process holds the lock for this work
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error digest reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(DigestError):
    """The configuration file or the environment is wrong."""

    exit_code = 2


class DatabaseError(DigestError):
    """The database cannot be opened, migrated or written."""


class SourceError(DigestError):
    """A source could not be fetched or parsed."""


class TemplateError(DigestError):
    """An email template failed to load or render."""


class SubscriberError(DigestError):
    """A subscriber operation was given a bad or unknown address."""


class EditionError(DigestError):
    """An edition cannot be prepared or is not in a state that allows the request."""


class DeliveryError(DigestError):
    """Mail could not be handed to the SMTP server."""


class LockedError(DigestError):
    """Another process is already doing this work."""
