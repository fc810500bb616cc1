"""Commands that send and watch: send, editions, worker, run-weekly, schedule, status, bounces."""


from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click

from .. import editions
from ..errors import DigestError
from .base import (
    cli,
    context_of,
    echo_json,
    finish_send,
    intro_options,
    intro_text,
    log_to_stderr,
    period_of,
    period_options,
    progress_bar,
    stop_on_signals,
    transport_factory,
)


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
    app = context_of(ctx)
    period = period_of(app, since, until)
    text = intro_text(intro, intro_file)
    if dry_run:
        outcome = editions.dry_run(app, period, intro=text)
    else:
        transport = app.transport()
        if to:
            outcome = editions.send_test(app, period, to, transport, intro=text)
        else:
            with progress_bar(as_json) as progress:
                outcome = editions.send(app, period, transport, intro=text,
                                        check_links=not skip_link_check, on_batch=progress,
                                        stop=stop_on_signals())
    finish_send(ctx, outcome, as_json, dry_run=dry_run, test=bool(to))


@cli.group("editions")
def editions_group() -> None:
    """List editions and act on one: show, pause, resume, cancel, retry, approve."""


@editions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def editions_list(ctx: click.Context, as_json: bool) -> None:
    """Each edition with its period, subject and deliveries per state."""
    from ..operations import list_editions

    app = context_of(ctx)
    for item in list_editions(app):
        if as_json:
            echo_json(item.__dict__)
            continue
        counts = ", ".join(f"{k} {v}" for k, v in item.counts.items() if v) or "no deliveries"
        click.echo(f"{item.id:>4}  {item.period:<24} {item.status:<10} {item.subject}\n"
                   f"      {counts}")


@editions_group.command("show")
@click.argument("edition_id", metavar="ID", type=int)
@click.pass_context
def editions_show(ctx: click.Context, edition_id: int) -> None:
    """One edition: state, counts, articles and the failures."""
    from ..operations import show

    app = context_of(ctx)
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
        from .. import operations

        app = context_of(ctx)

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
        with progress_bar(as_json) as progress:
            outcome = editions.deliver_edition(app, edition_id, transport, on_batch=progress,
                                               stop=stop_on_signals(), before=act)
        finish_send(ctx, outcome, as_json)


_act("pause", "Stop delivering edition ID after the messages in flight.", False)
_act("resume", "Continue delivering a paused edition ID.", True)
_act("cancel", "Stop edition ID for good (what was sent stays sent).", False)
_act("retry", "Send edition ID again to its failed and deferred deliveries.", True)
_act("approve", "Send a held (prepared) edition ID.", True)


@cli.command("worker")
@click.option("--poll", type=float, default=2.0, show_default=True,
              help="seconds between looks for editions being sent")
@click.pass_context
def worker(ctx: click.Context, poll: float) -> None:
    """Deliver editions being sent, with any number of other workers (PostgreSQL), until
    SIGTERM."""
    app = context_of(ctx)
    app.settings.smtp_password()  # fail on a missing password before claiming anything
    stop = stop_on_signals()
    sent = editions.work(app, stop=stop, poll=poll, say=lambda line: click.echo(line, err=True))
    click.echo(f"worker stopped; it sent {sent} messages")


@cli.command("run-weekly")
@click.pass_context
def run_weekly(ctx: click.Context) -> None:
    """Gather, compose, check and send this week's edition once (for cron)."""
    from .. import schedule as scheduling

    app = context_of(ctx)
    app.signer  # noqa: B018 - fail on a missing secret before doing anything
    log_to_stderr()
    result = scheduling.run_weekly(app, transport_factory(app), stop=stop_on_signals())
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
    from .. import schedule as scheduling

    app = context_of(ctx)
    trigger = scheduling.trigger_for(app)
    tz = app.settings.timezone
    if show:
        for when in scheduling.next_times(trigger, app.now(), 5):
            period = scheduling.period_for(trigger, when, tz, app.settings.digest.window_days)
            click.echo(f"{when.astimezone(tz):%a %Y-%m-%d %H:%M %Z}  edition {period.key}")
        return
    app.signer  # noqa: B018 - fail on a missing secret before starting
    log_to_stderr()
    daemon = scheduling.Daemon(app, transport_factory(app), trigger=trigger)
    daemon.run_forever()


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """The last scheduled runs, the next one, and the editions in progress."""
    from .. import schedule as scheduling

    app = context_of(ctx)
    trigger = scheduling.trigger_for(app) if app.settings.schedule else None
    info = scheduling.status(app, trigger)
    tz = app.settings.timezone
    if as_json:
        echo_json({"next_run": info["next"], "runs": [
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
    from ..bounces import process_imap, process_maildir

    app = context_of(ctx)
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


