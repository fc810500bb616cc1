"""The transactional mails to one reader: please confirm, and you are already subscribed.

They are rendered from email_templates/ (confirm.mjml.j2 and confirm.txt.j2,
already.txt.j2) per reader — there are few of them — and sent through the same
transport as editions, never through the ledger.
"""

from __future__ import annotations

import jinja2

from .app import Context
from .deliver.message import OutgoingMessage
from .deliver.notify import simple_message
from .errors import TemplateError
from .render import mjml_to_html
from .subscribers import SubscriberView
from .tokens import Purpose


def _render(ctx: Context, name: str, **values: object) -> str:
    values.setdefault("publication", ctx.settings.publication)
    values.setdefault("theme", ctx.settings.theme)
    try:
        return ctx.templates.get_template(name).render(**values)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"email template {name}: {exc}") from None


def confirmation(ctx: Context, subscriber: SubscriberView) -> OutgoingMessage:
    """The mail with the link that confirms a subscription."""
    token = ctx.signer.make(Purpose.CONFIRM, subscriber.id, subscriber.email_key)
    url = f"{ctx.settings.web.base_url}/confirm/{token}"
    values = {"confirm_url": url, "email": subscriber.email}
    html = mjml_to_html(_render(ctx, "confirm.mjml.j2", **values))
    text = _render(ctx, "confirm.txt.j2", **values)
    return simple_message(
        ctx.settings.publication, subscriber.email,
        f"Confirm your subscription to {ctx.settings.publication.name}", text,
        date=ctx.now(), html=html, name=subscriber.name)


def already_subscribed(ctx: Context, subscriber: SubscriberView) -> OutgoingMessage:
    """The short mail for a confirmed reader who asked to subscribe again."""
    preferences = ctx.personal_links(subscriber.id, subscriber.email,
                                     subscriber.email_key).preferences_url
    text = _render(ctx, "already.txt.j2", email=subscriber.email, preferences_url=preferences)
    return simple_message(
        ctx.settings.publication, subscriber.email,
        f"You are already subscribed to {ctx.settings.publication.name}", text,
        date=ctx.now(), name=subscriber.name)
