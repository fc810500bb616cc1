"""The `digest subscribers` commands."""


from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from .. import subscribers
from ..app import Context
from ..models import SubscriberStatus
from .base import (
    cli,
    context_of,
    echo_json,
)


@cli.group("subscribers")
def subscribers_group() -> None:
    """Add, import, list and remove subscribers."""


def _confirmation_sender(app: Context) -> Callable[[subscribers.SubscriberView], None]:
    from .. import mails

    app.signer  # noqa: B018 - confirmation links need the secret: fail before any work
    transport = app.transport()
    transport.check()

    def send_confirmation(view: subscribers.SubscriberView) -> None:
        result = transport.send(mails.confirmation(app, view))
        if result.outcome.value != "sent":
            click.echo(f"could not mail {view.email}: {result.summary}", err=True)

    return send_confirmation


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", help="the subscriber's name")
@click.option("--pending", is_flag=True,
              help="add as pending and mail a confirmation link instead of vouching")
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, name: str | None, pending: bool) -> None:
    """Add EMAIL as a confirmed subscriber (an admin vouches for their consent)."""
    app = context_of(ctx)
    send_confirmation = _confirmation_sender(app) if pending else None
    status = SubscriberStatus.PENDING if pending else SubscriberStatus.CONFIRMED
    added = subscribers.add(app.db, email, name=name, now=app.now(), status=status)
    if send_confirmation is not None:
        send_confirmation(added)
        click.echo(f"added {added.email} (pending); a confirmation link was mailed")
    else:
        click.echo(f"added {added.email} ({added.status})")


@subscribers_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--status", type=click.Choice(["confirmed", "pending"]), default="confirmed",
              show_default=True,
              help="confirmed: you vouch for their consent; pending: each gets a confirmation "
                   "mail")
@click.pass_context
def subscribers_import(ctx: click.Context, file: Path, status: str) -> None:
    """Import FILE.csv (header row with email, optional name; other columns kept)."""
    app = context_of(ctx)
    pending = status == "pending"
    send_confirmation = _confirmation_sender(app) if pending else None
    report = subscribers.import_csv(app.db, file, now=app.now(),
                                    status=SubscriberStatus(status), on_new=send_confirmation)
    for line, reason in report.problems:
        click.echo(f"{file}:{line}: skipped: {reason}", err=True)
    mailed = "; each was mailed a confirmation link" if pending and report.imported else ""
    click.echo(f"imported {report.imported} subscribers, skipped {report.skipped} rows"
               f"{mailed}")


@subscribers_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def subscribers_export(ctx: click.Context, file: Path | None) -> None:
    """Write every subscriber with all their fields as CSV to FILE (or print it)."""
    app = context_of(ctx)
    if file is None:
        subscribers.export_csv(app.db, sys.stdout)
        return
    with file.open("w", newline="", encoding="utf-8") as out:
        count = subscribers.export_csv(app.db, out)
    click.echo(f"wrote {count} subscribers to {file}")


@subscribers_group.command("unsubscribe")
@click.argument("email")
@click.pass_context
def subscribers_unsubscribe(ctx: click.Context, email: str) -> None:
    """Unsubscribe EMAIL (kept, so an import cannot add them back unasked)."""
    app = context_of(ctx)
    left = subscribers.unsubscribe_address(app.db, email, now=app.now())
    click.echo(f"unsubscribed {left.email}")


@subscribers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]),
              help="only subscribers with this status")
@click.pass_context
def subscribers_list(ctx: click.Context, as_json: bool, status: str | None) -> None:
    """List subscribers, oldest first."""
    app = context_of(ctx)
    count = 0
    wanted = SubscriberStatus(status) if status else None
    for sub in subscribers.list_subscribers(app.db, wanted):
        count += 1
        if as_json:
            echo_json({"email": sub.email, "name": sub.name, "status": sub.status,
                        "origin": sub.origin, "created_at": sub.created_at,
                        "confirmed_at": sub.confirmed_at,
                        "unsubscribed_at": sub.unsubscribed_at,
                        "excluded_sections": list(sub.excluded_sections),
                        "consent": sub.consent, "attributes": sub.attributes})
        else:
            click.echo(f"{sub.email:<40} {sub.status:<12} {sub.name or ''}")
    if not as_json:
        click.echo(f"{count} subscribers")


@subscribers_group.command("remove")
@click.argument("email")
@click.pass_context
def subscribers_remove(ctx: click.Context, email: str) -> None:
    """Erase EMAIL and their personal data (delivery counts stay, anonymous)."""
    app = context_of(ctx)
    removed = subscribers.remove(app.db, email)
    click.echo(f"removed {removed.email}")


