"""The `digest` command: parses, calls one library function, prints. No logic of its own.

Every DigestError becomes ``error: <message>`` (and a hint) on stderr with its exit
code: 2 for configuration mistakes, 1 for the rest. A traceback means a bug.

This package holds the group and the helpers every command shares (base), and the
commands by subject: content (articles, sources, previews), people (subscribers),
sending (send, editions, the schedule, workers, bounces).
"""


from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
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

from .. import __version__, editions
from ..app import Context
from ..check import CheckReport
from ..compose import explicit_period, weekly_period
from ..config import Settings, load_config
from ..deliver.run import RunReport
from ..deliver.smtp import SMTPTransport
from ..domain import Period
from ..errors import DigestError

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


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        settings = load_config(obj.get("config"))
        for warning in settings.warnings:
            click.echo(f"warning: {warning}", err=True)
        obj["settings"] = settings
    return obj["settings"]  # type: ignore[no-any-return]


def context_of(ctx: click.Context) -> Context:
    obj = ctx.ensure_object(dict)
    if "context" not in obj:
        obj["context"] = Context(settings_of(ctx))
        ctx.call_on_close(obj["context"].close)
    return obj["context"]  # type: ignore[no-any-return]


def period_of(app: Context, since: date | datetime | None, until: date | datetime | None) -> Period:
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


def intro_text(intro: str | None, intro_file: Path | None) -> str | None:
    if intro is not None and intro_file is not None:
        raise click.UsageError("--intro and --intro-file go one at a time")
    if intro_file is not None:
        try:
            return intro_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DigestError(f"cannot read the intro file {intro_file}: {exc}") from None
    return intro


def print_check(report: CheckReport | None, *, errors: bool = True) -> None:
    if report is None:
        return
    for finding in (report.errors if errors else []) + report.warnings:
        click.echo(f"  {finding.level}: {finding.message}", err=True)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=json_default))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              envvar="DIGEST_CONFIG", help="config file (default: $DIGEST_CONFIG or ./config.toml)")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """digest: gather a publication's articles, compose the weekly edition, send it."""
    ctx.ensure_object(dict)["config"] = config


def finish_send(ctx: click.Context, outcome: editions.SendOutcome, as_json: bool, *,
                 dry_run: bool = False, test: bool = False) -> None:
    report_send(outcome, as_json, dry_run=dry_run, test=test)
    if outcome.state == editions.SendState.INCOMPLETE:
        ctx.exit(3)
    if outcome.state == editions.SendState.NOT_SENDABLE:
        ctx.exit(1)


def stop_on_signals() -> threading.Event:
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
def progress_bar(quiet: bool) -> Iterator[Callable[[RunReport], None]]:
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


def report_send(outcome: editions.SendOutcome, as_json: bool, *, dry_run: bool,
                 test: bool) -> None:
    run = outcome.run
    if as_json:
        echo_json({
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
    print_check(outcome.check, errors=False)
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


def log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("apscheduler", "httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def transport_factory(app: Context) -> Callable[[], SMTPTransport]:
    app.settings.smtp_password()  # a missing one fails now, not at 7 a.m.
    return app.transport


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


