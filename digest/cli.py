"""The `digest` command: parses, calls one library function, prints. No logic of its own.

Every DigestError becomes ``error: <message>`` (and a hint) on stderr with its exit
code: 2 for configuration mistakes, 1 for the rest. A traceback means a bug.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, editions, subscribers
from .app import Context
from .check import CheckReport
from .compose import explicit_period, weekly_period
from .config import Settings, load_config
from .deliver.run import RunReport
from .deliver.smtp import SMTPTransport
from .domain import Period
from .errors import DigestError
from .models import SubscriberStatus

F = TypeVar("F", bound=Callable[..., Any])


class DateOrTime(click.ParamType):  # type: ignore[type-arg]
    """A date (2026-11-16) or an ISO 8601 date-time (2026-11-16T08:00+01:00)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> date | datetime:
        if isinstance(value, date):
            return value
        text = str(value).strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time",
                      param, ctx)


DATE = DateOrTime()


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        settings = load_config(obj.get("config"))
        for warning in settings.warnings:
            click.echo(f"warning: {warning}", err=True)
        obj["settings"] = settings
    return obj["settings"]  # type: ignore[no-any-return]


def _context(ctx: click.Context) -> Context:
    obj = ctx.ensure_object(dict)
    if "context" not in obj:
        obj["context"] = Context(_settings(ctx))
        ctx.call_on_close(obj["context"].close)
    return obj["context"]  # type: ignore[no-any-return]


def _period(app: Context, since: date | datetime | None, until: date | datetime | None) -> Period:
    settings = app.settings
    if since is None and until is None:
        return weekly_period(app.now(), settings.timezone, settings.digest.window_days)
    if since is None or until is None:
        raise click.UsageError("--since and --until go together")
    try:
        return explicit_period(since, until, settings.timezone)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def period_options(func: F) -> F:
    """--since/--until: another period than the current ISO week."""
    func = click.option("--until", type=DATE,
                        help="end of the period (a date counts whole)")(func)
    return click.option("--since", type=DATE,
                        help="start of the period (date or date-time)")(func)


def intro_options(func: F) -> F:
    """--intro/--intro-file: the editor's intro in Markdown (default: [digest] intro_file)."""
    func = click.option("--intro-file", type=click.Path(dir_okay=False, path_type=Path),
                        help="read the intro (Markdown) from this file")(func)
    return click.option("--intro", help="the editor's intro, in Markdown")(func)


def _intro(intro: str | None, intro_file: Path | None) -> str | None:
    if intro is not None and intro_file is not None:
        raise click.UsageError("--intro and --intro-file go one at a time")
    if intro_file is not None:
        try:
            return intro_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DigestError(f"cannot read the intro file {intro_file}: {exc}") from None
    return intro


def _print_check(report: CheckReport | None, *, errors: bool = True) -> None:
    if report is None:
        return
    for finding in (report.errors if errors else []) + report.warnings:
        click.echo(f"  {finding.level}: {finding.message}", err=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=_json_default))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              envvar="DIGEST_CONFIG", help="config file (default: $DIGEST_CONFIG or ./config.toml)")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """digest: gather a publication's articles, compose the weekly edition, send it."""
    ctx.ensure_object(dict)["config"] = config


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite files that exist")
def init(folder: Path, force: bool) -> None:
    """Write a ready-to-edit config.toml and email_templates/ into FOLDER."""
    from .sample import init as write_sample

    for path in write_sample(folder, force=force):
        click.echo(f"wrote {path}")
    click.echo(f"Next: edit {folder / 'config.toml'}, set DIGEST_SECRET_KEY, run `digest gather`.")


@cli.command()
@click.pass_context
def gather(ctx: click.Context) -> None:
    """Fetch every source and store new articles; print a summary per source."""
    from .gather.run import gather as run_gather

    app = _context(ctx)
    report = run_gather(app.settings, app.db, now=app.now)
    for source in report.sources:
        if source.failed:
            click.echo(f"{source.name}: FAILED: {source.error}")
        elif source.status == "not_modified":
            click.echo(f"{source.name}: not modified since the last fetch")
        else:
            extra = f", {source.skipped} skipped (no link)" if source.skipped else ""
            if source.enriched:
                extra += f", {source.enriched} completed from their pages"
            click.echo(f"{source.name}: {source.new} new, {source.updated} updated, "
                       f"{source.unchanged} unchanged{extra}")
        for note in source.notes:
            click.echo(f"  note: {note}")
    click.echo(f"{report.new} new articles from {len(report.sources)} sources"
               + (f"; {len(report.failed)} failed" if report.failed else ""))
    if report.failed:
        ctx.exit(1)


@cli.group(invoke_without_command=True)
@click.option("--since", type=DATE, help="published on or after (date or date-time)")
@click.option("--until", type=DATE, help="published up to (a date counts whole)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def articles(ctx: click.Context, since: date | datetime | None, until: date | datetime | None,
             as_json: bool) -> None:
    """List the articles gathered, newest first (or add, pin, exclude, include one)."""
    if ctx.invoked_subcommand is not None:
        return
    from .queries.articles import list_articles

    app = _context(ctx)
    start = end = None
    if since is not None or until is not None:
        period = explicit_period(since or date(1970, 1, 1), until or date(9999, 12, 30),
                                 app.settings.timezone)
        start, end = period.start, period.end
    with app.db.reader() as session:
        rows = list_articles(session, start, end)
        for row in rows:
            record = {
                "url": row.url, "title": row.title,
                "source": row.source.name if row.source else None,
                "published": row.published_at.isoformat(),
                "published_estimated": row.published_estimated,
                "section": row.category, "author": row.author, "image": row.image_url,
                "image_credit": row.image_credit, "summary": row.summary_text,
                "pinned": row.pinned, "excluded": row.excluded, "note": row.note,
            }
            if as_json:
                _echo_json(record)
            else:
                when = row.published_at.astimezone(app.settings.timezone)
                flags = ("P" if row.pinned else " ") + ("X" if row.excluded else " ")
                click.echo(f"{when:%Y-%m-%d %H:%M} {flags} {row.category or '-':<24.24}  "
                           f"{row.title}\n{'':>20}{row.url}")
        if not as_json:
            click.echo(f"{len(rows)} articles")


@articles.command("add")
@click.argument("url")
@click.option("--section", help="the section to show it in (default: what the page says)")
@click.option("--note", help="a note for the editors (not shown to readers)")
@click.pass_context
def articles_add(ctx: click.Context, url: str, section: str | None, note: str | None) -> None:
    """Add a page that is in no feed, reading its title, dek, image and author."""
    from .curation import add_page

    app = _context(ctx)
    done = add_page(app.settings, app.db, url, now=app.now(), section=section, note=note)
    click.echo(f"{done.outcome}: {done.title}\n  {done.url}")


def _curate(name: str, doc: str) -> None:
    @articles.command(name, help=doc)
    @click.argument("url")
    @click.pass_context
    def command(ctx: click.Context, url: str) -> None:
        from . import curation

        done = getattr(curation, name)(_context(ctx).db, url)
        click.echo(f"{done.outcome}: {done.title}\n  {done.url}")


_curate("pin", "Make URL the lead story of the coming edition (unpins any other).")
_curate("unpin", "Let the lead story be chosen again (the newest article with an image).")
_curate("exclude", "Keep URL out of editions until it is included again.")
_curate("include", "Let an excluded URL into editions again.")


@cli.group("sources")
def sources_group() -> None:
    """List sources with their health; import and export OPML."""


@sources_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def sources_list(ctx: click.Context, as_json: bool) -> None:
    """Every source with its last fetch time, status, error and article count."""
    from .sources import list_sources

    app = _context(ctx)
    for source in list_sources(app.settings, app.db):
        if as_json:
            _echo_json(source.__dict__)
            continue
        when = (source.fetched_at.astimezone(app.settings.timezone).strftime("%Y-%m-%d %H:%M")
                if source.fetched_at else "never fetched")
        status = source.status or "-"
        gone = "" if source.configured else "  (no longer in config.toml)"
        click.echo(f"{source.name}{gone}\n  {source.url}\n  last fetch: {when}, {status}, "
                   f"{source.articles} articles")
        if source.error:
            click.echo(f"  error: {source.error}")


@sources_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def sources_import(ctx: click.Context, file: Path) -> None:
    """Add the feeds of an OPML file to config.toml."""
    from .sources import import_opml

    report = import_opml(_settings(ctx), file)
    for source in report.added:
        click.echo(f"added {source.name}: {source.url}")
    for title, reason in report.skipped:
        click.echo(f"skipped {title}: {reason}", err=True)
    click.echo(f"{len(report.added)} sources added to {_settings(ctx).path}, "
               f"{len(report.skipped)} skipped")


@sources_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def sources_export(ctx: click.Context, file: Path | None) -> None:
    """Write the configured sources as OPML to FILE (or print it)."""
    from .sources import export_opml

    text = export_opml(_settings(ctx))
    if file is None:
        click.echo(text, nl=False)
    else:
        file.write_text(text, encoding="utf-8")
        click.echo(f"wrote {file}")


@cli.command()
@period_options
@intro_options
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("preview"), show_default=True, help="folder to write into")
@click.option("--open", "open_browser", is_flag=True, help="open digest.html in a browser")
@click.pass_context
def preview(ctx: click.Context, since: date | datetime | None, until: date | datetime | None,
            intro: str | None, intro_file: Path | None, out: Path, open_browser: bool) -> None:
    """Compose and render the coming edition without sending it."""
    app = _context(ctx)
    period = _period(app, since, until)
    files = editions.preview(app, period, out, intro=_intro(intro, intro_file))
    if files is None:
        click.echo(f"Nothing to preview for {period.key}: no article of the window that was "
                   "not featured already.")
        return
    click.echo(f"Edition {period.key}: {files.subject!r}, {files.articles} articles")
    for path in (files.html, files.text, files.eml, files.mjml):
        click.echo(f"  {path}")
    click.echo(f"digest.eml is addressed to {files.recipient}")
    if open_browser:
        webbrowser.open(files.html.resolve().as_uri())


@cli.group("subscribers")
def subscribers_group() -> None:
    """Add, import, list and remove subscribers."""


def _confirmation_sender(app: Context) -> Callable[[subscribers.SubscriberView], None]:
    from . import mails

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
    app = _context(ctx)
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
    app = _context(ctx)
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
    app = _context(ctx)
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
    app = _context(ctx)
    left = subscribers.unsubscribe_address(app.db, email, now=app.now())
    click.echo(f"unsubscribed {left.email}")


@subscribers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]),
              help="only subscribers with this status")
@click.pass_context
def subscribers_list(ctx: click.Context, as_json: bool, status: str | None) -> None:
    """List subscribers, oldest first."""
    app = _context(ctx)
    count = 0
    wanted = SubscriberStatus(status) if status else None
    for sub in subscribers.list_subscribers(app.db, wanted):
        count += 1
        if as_json:
            _echo_json({"email": sub.email, "name": sub.name, "status": sub.status,
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
    app = _context(ctx)
    removed = subscribers.remove(app.db, email)
    click.echo(f"removed {removed.email}")


@cli.command()
@period_options
@intro_options
@click.option("--skip-link-check", is_flag=True,
              help="do not ask the article links whether they answer")
@click.pass_context
def check(ctx: click.Context, since: date | datetime | None, until: date | datetime | None,
          intro: str | None, intro_file: Path | None, skip_link_check: bool) -> None:
    """Run the pre-flight check on the coming edition (errors block a send)."""
    app = _context(ctx)
    period = _period(app, since, until)
    app.signer  # noqa: B018 - a missing secret is reported before the work
    prepared = editions.prepare(app, period, intro=_intro(intro, intro_file))
    if prepared is None:
        click.echo(f"Nothing to check for {period.key}: no article of the window that was "
                   "not featured already.")
        return
    report = editions.preflight(app, prepared, links=not skip_link_check)
    for finding in report.findings:
        click.echo(f"{finding.level}: {finding.message}")
    size = len(prepared.rendered.html.encode()) / 1024
    click.echo(f"Edition {period.key}: {len(prepared.plan.articles)} articles, "
               f"{size:.0f} KB of HTML; {len(report.errors)} errors, "
               f"{len(report.warnings)} warnings")
    if prepared.thin:
        click.echo(f"Fewer than min_articles ({app.settings.digest.min_articles}): the send "
                   f"would {app.settings.digest.thin_policy} it.")
    if report.errors:
        ctx.exit(1)


@cli.command()
@period_options
@intro_options
@click.option("--to", "to", metavar="EMAIL", help="send one [TEST] copy to EMAIL only")
@click.option("--dry-run", is_flag=True, help="build every message, send none, record nothing")
@click.option("--skip-link-check", is_flag=True,
              help="do not ask the article links whether they answer")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
@click.pass_context
def send(ctx: click.Context, since: date | datetime | None, until: date | datetime | None,
         intro: str | None, intro_file: Path | None, to: str | None, dry_run: bool,
         skip_link_check: bool, as_json: bool) -> None:
    """Compose the period's edition and deliver it to every confirmed subscriber."""
    app = _context(ctx)
    period = _period(app, since, until)
    text = _intro(intro, intro_file)
    if dry_run:
        outcome = editions.dry_run(app, period, intro=text)
    else:
        transport = app.transport()
        if to:
            outcome = editions.send_test(app, period, to, transport, intro=text)
        else:
            with _progress(as_json) as progress:
                outcome = editions.send(app, period, transport, intro=text,
                                        check_links=not skip_link_check, on_batch=progress,
                                        stop=_stop_on_signals())
    _finish_send(ctx, outcome, as_json, dry_run=dry_run, test=bool(to))


def _finish_send(ctx: click.Context, outcome: editions.SendOutcome, as_json: bool, *,
                 dry_run: bool = False, test: bool = False) -> None:
    _report_send(outcome, as_json, dry_run=dry_run, test=test)
    if outcome.state == editions.SendState.INCOMPLETE:
        ctx.exit(3)
    if outcome.state == editions.SendState.NOT_SENDABLE:
        ctx.exit(1)


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT stop a send after the batch in flight is recorded."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo("stopping after the messages in flight (again to abort)", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[RunReport], None]]:
    """A progress bar with rate and ETA on a terminal; nothing elsewhere."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda report: None
        return
    bar = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:>7.1f}/s"), TimeRemainingColumn(),
                   TextColumn("{task.fields[detail]}"), console=console, transient=True)
    task = bar.add_task("send", total=None, rate=0.0, detail="")
    started = time.monotonic()

    def update(report: RunReport) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        detail = f"deferred {report.deferred}, failed {report.failed}" if (
            report.deferred or report.failed) else ""
        bar.update(task, total=report.total or None, completed=report.handled,
                   rate=report.sent / elapsed, detail=detail)

    with bar:
        yield update


@cli.group("editions")
def editions_group() -> None:
    """List editions and act on one: show, pause, resume, cancel, retry, approve."""


@editions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def editions_list(ctx: click.Context, as_json: bool) -> None:
    """Each edition with its period, subject and deliveries per state."""
    from .operations import list_editions

    app = _context(ctx)
    for item in list_editions(app):
        if as_json:
            _echo_json(item.__dict__)
            continue
        counts = ", ".join(f"{k} {v}" for k, v in item.counts.items() if v) or "no deliveries"
        click.echo(f"{item.id:>4}  {item.period:<24} {item.status:<10} {item.subject}\n"
                   f"      {counts}")


@editions_group.command("show")
@click.argument("edition_id", metavar="ID", type=int)
@click.pass_context
def editions_show(ctx: click.Context, edition_id: int) -> None:
    """One edition: state, counts, articles and the failures."""
    from .operations import show

    app = _context(ctx)
    detail = show(app, edition_id)
    tz = app.settings.timezone
    click.echo(f"Edition {detail.id}: {detail.period} ({detail.status})\n  {detail.subject}")
    for label, when in (("created", detail.created_at), ("enqueued", detail.enqueued_at),
                        ("completed", detail.completed_at)):
        if when:
            click.echo(f"  {label}: {when.astimezone(tz):%Y-%m-%d %H:%M %Z}")
    click.echo("  deliveries: " + (", ".join(f"{k} {v}" for k, v in detail.counts.items()
                                            if v) or "none"))
    if detail.variants:
        click.echo(f"  variants rendered for readers' preferences: {detail.variants}")
    click.echo("  articles:")
    for title, section, lead in detail.articles:
        click.echo(f"    {'LEAD ' if lead else ''}[{section or '-'}] {title}")
    for address, reply in detail.failures:
        click.echo(f"  {address}: {reply}")


def _act(name: str, doc: str, then_send: bool) -> None:
    @editions_group.command(name, help=doc)
    @click.argument("edition_id", metavar="ID", type=int)
    @click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
    @click.pass_context
    def command(ctx: click.Context, edition_id: int, as_json: bool) -> None:
        from . import operations

        app = _context(ctx)

        def act() -> None:
            if name == "retry":
                count = operations.retry(app, edition_id)
                click.echo(f"{count} deliveries of edition {edition_id} are owed again")
            else:
                row = getattr(operations, name)(app, edition_id)
                click.echo(f"edition {row.id} ({row.period}) is now {row.status}")

        if not then_send:
            act()
            return
        transport = app.transport()
        with _progress(as_json) as progress:
            outcome = editions.deliver_edition(app, edition_id, transport, on_batch=progress,
                                               stop=_stop_on_signals(), before=act)
        _finish_send(ctx, outcome, as_json)


_act("pause", "Stop delivering edition ID after the messages in flight.", False)
_act("resume", "Continue delivering a paused edition ID.", True)
_act("cancel", "Stop edition ID for good (what was sent stays sent).", False)
_act("retry", "Send edition ID again to its failed and deferred deliveries.", True)
_act("approve", "Send a held (prepared) edition ID.", True)


def _report_send(outcome: editions.SendOutcome, as_json: bool, *, dry_run: bool,
                 test: bool) -> None:
    run = outcome.run
    if as_json:
        _echo_json({
            "state": outcome.state.value, "period": outcome.period,
            "edition": outcome.edition_id, "subject": outcome.subject,
            "enqueued": outcome.enqueued, "counts": outcome.counts,
            "sent": run.sent if run else 0, "deferred": run.deferred if run else 0,
            "failed": run.failed if run else 0, "dry_run": dry_run, "test": test,
            "failures": [{"email": e, "reply": r} for e, r in (run.failures if run else [])],
            "seconds": round(run.seconds, 3) if run else 0,
            "enqueue_seconds": round(outcome.enqueue_seconds, 3),
            "max_unrecorded": run.max_unrecorded if run else 0,
        })
        return
    State = editions.SendState
    _print_check(outcome.check, errors=False)
    if outcome.state == State.THIN_SKIPPED:
        click.echo(f"Edition {outcome.period} would have {outcome.articles} articles, fewer "
                   "than [digest] min_articles; skipped (thin_policy = \"skip\"), nothing sent.")
        return
    if outcome.state == State.HELD:
        told = ", ".join(outcome.notified) or "nobody (no [publication] editors configured)"
        click.echo(f"Edition {outcome.period} has only {outcome.articles} articles; it is "
                   f"prepared and held (thin_policy = \"hold\"). Editors told: {told}.\n"
                   f"Send it anyway with `digest editions approve {outcome.edition_id}`.")
        return
    if outcome.state == State.NOTHING_NEW:
        click.echo(f"Nothing to send for {outcome.period}: no article of the window that was "
                   "not featured in an edition already.")
        return
    if outcome.state == State.ALREADY_SENT:
        click.echo(f"Edition {outcome.period} was already sent; nothing sent again.")
        return
    if outcome.state == State.NOT_SENDABLE:
        click.echo(f"Edition {outcome.period} is {outcome.status}, not being sent "
                   f"(`digest editions show {outcome.edition_id}`).")
        return
    label = "Dry run of" if dry_run else ("Test copy of" if test else "Edition")
    click.echo(f"{label} {outcome.period}: {outcome.subject!r}")
    if run is not None:
        skipped = f", suppressed {run.suppressed}" if run.suppressed else ""
        click.echo(f"  sent {run.sent}, deferred {run.deferred}, failed {run.failed}{skipped} "
                   f"in {run.seconds:.1f} s")
        for email, reply in run.failures:
            click.echo(f"  failed: {email}: {reply}")
    if outcome.counts:
        parts = ", ".join(f"{k} {v}" for k, v in outcome.counts.items() if v)
        click.echo(f"  ledger: {parts or 'empty'}")
    if outcome.state == State.INCOMPLETE:
        click.echo("  Some deliveries are still owed; run `digest send` again to continue.")


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("apscheduler", "httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _transport_factory(app: Context) -> Callable[[], SMTPTransport]:
    app.settings.smtp_password()  # a missing one fails now, not at 7 a.m.
    return app.transport


@cli.command("worker")
@click.option("--poll", type=float, default=2.0, show_default=True,
              help="seconds between looks for editions being sent")
@click.pass_context
def worker(ctx: click.Context, poll: float) -> None:
    """Deliver editions being sent, with any number of other workers (PostgreSQL), until
    SIGTERM."""
    app = _context(ctx)
    app.settings.smtp_password()  # fail on a missing password before claiming anything
    stop = _stop_on_signals()
    sent = editions.work(app, stop=stop, poll=poll, say=lambda line: click.echo(line, err=True))
    click.echo(f"worker stopped; it sent {sent} messages")


@cli.command("run-weekly")
@click.pass_context
def run_weekly(ctx: click.Context) -> None:
    """Gather, compose, check and send this week's edition once (for cron)."""
    from . import schedule as scheduling

    app = _context(ctx)
    app.signer  # noqa: B018 - fail on a missing secret before doing anything
    _log_to_stderr()
    result = scheduling.run_weekly(app, _transport_factory(app), stop=_stop_on_signals())
    if result is None:
        click.echo("This firing already ran; nothing done.")
        return
    click.echo(f"{result.period}: {result.outcome.value}"
               + (f" ({result.detail})" if result.detail else ""))
    if result.outcome.value in ("failed", "incomplete"):
        ctx.exit(1 if result.outcome.value == "failed" else 3)


@cli.command("schedule")
@click.option("--show", is_flag=True, help="print the next five run times and exit")
@click.pass_context
def schedule_command(ctx: click.Context, show: bool) -> None:
    """Run the weekly job on [schedule] cron until stopped (SIGTERM finishes the batch)."""
    from . import schedule as scheduling

    app = _context(ctx)
    trigger = scheduling.trigger_for(app)
    tz = app.settings.timezone
    if show:
        for when in scheduling.next_times(trigger, app.now(), 5):
            period = scheduling.period_for(trigger, when, tz, app.settings.digest.window_days)
            click.echo(f"{when.astimezone(tz):%a %Y-%m-%d %H:%M %Z}  edition {period.key}")
        return
    app.signer  # noqa: B018 - fail on a missing secret before starting
    _log_to_stderr()
    daemon = scheduling.Daemon(app, _transport_factory(app), trigger=trigger)
    daemon.run_forever()


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """The last scheduled runs, the next one, and the editions in progress."""
    from . import schedule as scheduling

    app = _context(ctx)
    trigger = scheduling.trigger_for(app) if app.settings.schedule else None
    info = scheduling.status(app, trigger)
    tz = app.settings.timezone
    if as_json:
        _echo_json({"next_run": info["next"], "runs": [
            {"scheduled_for": r[0], "period": r[1], "outcome": r[2], "detail": r[3]}
            for r in info["runs"]], "in_progress": [e.__dict__ for e in info["in_progress"]]})
        return
    nxt = info["next"]
    click.echo(f"Next run: {nxt.astimezone(tz):%a %Y-%m-%d %H:%M %Z}" if nxt
               else "Next run: none (no [schedule] in the config)")
    click.echo("Last runs:" if info["runs"] else "Last runs: none yet")
    for when, period, outcome, detail in info["runs"]:
        click.echo(f"  {when.astimezone(tz):%Y-%m-%d %H:%M}  {period:<24} {outcome}"
                   + (f"  {detail}" if detail else ""))
    for edition in info["in_progress"]:
        counts = ", ".join(f"{k} {v}" for k, v in edition.counts.items() if v) or "no deliveries"
        click.echo(f"In progress: edition {edition.id} {edition.period} ({edition.status}): "
                   f"{counts}")


@cli.group("bounces")
def bounces_group() -> None:
    """Read bounces, complaints and mailed unsubscribe requests."""


@bounces_group.command("process")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path),
              help="a Maildir to read (default: [bounces] maildir, else the IMAP settings)")
@click.pass_context
def bounces_process(ctx: click.Context, maildir: Path | None) -> None:
    """Act on DSNs (RFC 3464), ARF complaints (RFC 5965) and unsubscribe requests."""
    from .bounces import process_imap, process_maildir

    app = _context(ctx)
    cfg = app.settings.bounces
    folder = maildir or cfg.maildir
    if folder is not None:
        report = process_maildir(app, folder, app.now())
        where = str(folder)
    elif cfg.imap_host:
        report = process_imap(app, app.now())
        where = f"IMAP {cfg.imap_host}/{cfg.imap_folder}"
    else:
        raise DigestError("no mailbox to read",
                          hint="pass --maildir PATH, or set [bounces] maildir or imap_host")
    for kind, count in sorted(report.counts.items()):
        click.echo(f"{kind}: {count}")
    for line in report.unmatched:
        click.echo(f"left in place, not matched: {line}", err=True)
    click.echo(f"{sum(report.counts.values())} messages read from {where}; "
               f"{len(report.unmatched)} left in place")


@cli.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True, help="folder to write into")
def demo(out: Path) -> None:
    """Run the whole flow on a bundled sample feed, three demo subscribers and a built-in
    SMTP sink; no network needed."""
    from .demo import run_demo

    report = run_demo(out, say=click.echo)
    click.echo("")
    click.echo(f"Sent {report.messages} messages; each is a .eml file in {report.outbox}/")
    if report.preview is not None:
        click.echo(f"Preview of edition {report.send.period} ({report.preview.articles} "
                   f"articles) in {report.preview.folder}/:")
        for path in (report.preview.html, report.preview.text, report.preview.eml,
                     report.preview.mjml):
            click.echo(f"  {path}")
    click.echo(f"Database: {report.folder / 'digest.db'}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=int, help="port to listen on")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Run the web app: subscribe, confirm, unsubscribe, preferences, archive, and
    /preview for local editors."""
    from .web import serve as run_server

    app = _context(ctx)
    app.signer  # noqa: B018 - the app signs and checks tokens: the secret must be there
    click.echo(f"digest web app on http://{host}:{port}/ (preview: /preview, from this "
               "machine only)")
    run_server(app, host, port)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=int)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("outbox"), show_default=True, help="folder for the .eml files")
def sink(host: str, port: int, out: Path) -> None:
    """Run a local SMTP server that keeps every message as a .eml file (for trying out)."""
    import time

    from .deliver.sink import SmtpSink

    with SmtpSink(out, host=host, port=port) as server:
        click.echo(f"SMTP sink on {host}:{server.port}, writing to {out}/ (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _guard(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except SQLAlchemyError as exc:
            # The database went away mid-run (a restart, a network cut): nothing recorded is
            # lost, and what was sent but not recorded goes again with its Message-ID.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            click.echo(f"error: database: {reason}", err=True)
            click.echo("hint: run the command again once the database answers; deliveries "
                       "in progress are taken over when their lease runs out", err=True)
            sys.exit(1)
    return wrapper  # type: ignore[return-value]


@_guard
def main(argv: list[str] | None = None) -> None:
    """Entry point of the `digest` console script."""
    cli.main(args=argv, prog_name="digest")


