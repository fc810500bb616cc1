"""Commands about what goes into an edition: init, gather, articles, sources, preview,
check, and the demo, the web app and the local sink."""


from __future__ import annotations

import time
import webbrowser
from datetime import date, datetime
from pathlib import Path

import click

from .. import editions
from ..compose import explicit_period
from .base import (
    DATE,
    cli,
    context_of,
    echo_json,
    intro_options,
    intro_text,
    period_of,
    period_options,
    settings_of,
)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite files that exist")
def init(folder: Path, force: bool) -> None:
    """Write a ready-to-edit config.toml and email_templates/ into FOLDER."""
    from ..sample import init as write_sample

    for path in write_sample(folder, force=force):
        click.echo(f"wrote {path}")
    click.echo(f"Next: edit {folder / 'config.toml'}, set DIGEST_SECRET_KEY, run `digest gather`.")


@cli.command()
@click.pass_context
def gather(ctx: click.Context) -> None:
    """Fetch every source and store new articles; print a summary per source."""
    from ..gather.run import gather as run_gather

    app = context_of(ctx)
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
    from ..queries.articles import list_articles

    app = context_of(ctx)
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
                echo_json(record)
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
    from ..curation import add_page

    app = context_of(ctx)
    done = add_page(app.settings, app.db, url, now=app.now(), section=section, note=note)
    click.echo(f"{done.outcome}: {done.title}\n  {done.url}")


def _curate(name: str, doc: str) -> None:
    @articles.command(name, help=doc)
    @click.argument("url")
    @click.pass_context
    def command(ctx: click.Context, url: str) -> None:
        from .. import curation

        done = getattr(curation, name)(context_of(ctx).db, url)
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
    from ..sources import list_sources

    app = context_of(ctx)
    for source in list_sources(app.settings, app.db):
        if as_json:
            echo_json(source.__dict__)
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
    from ..sources import import_opml

    report = import_opml(settings_of(ctx), file)
    for source in report.added:
        click.echo(f"added {source.name}: {source.url}")
    for title, reason in report.skipped:
        click.echo(f"skipped {title}: {reason}", err=True)
    click.echo(f"{len(report.added)} sources added to {settings_of(ctx).path}, "
               f"{len(report.skipped)} skipped")


@sources_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.pass_context
def sources_export(ctx: click.Context, file: Path | None) -> None:
    """Write the configured sources as OPML to FILE (or print it)."""
    from ..sources import export_opml

    text = export_opml(settings_of(ctx))
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
    app = context_of(ctx)
    period = period_of(app, since, until)
    files = editions.preview(app, period, out, intro=intro_text(intro, intro_file))
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


@cli.command()
@period_options
@intro_options
@click.option("--skip-link-check", is_flag=True,
              help="do not ask the article links whether they answer")
@click.pass_context
def check(ctx: click.Context, since: date | datetime | None, until: date | datetime | None,
          intro: str | None, intro_file: Path | None, skip_link_check: bool) -> None:
    """Run the pre-flight check on the coming edition (errors block a send)."""
    app = context_of(ctx)
    period = period_of(app, since, until)
    app.signer  # noqa: B018 - a missing secret is reported before the work
    prepared = editions.prepare(app, period, intro=intro_text(intro, intro_file))
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
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True, help="folder to write into")
def demo(out: Path) -> None:
    """Run the whole flow on a bundled sample feed, three demo subscribers and a built-in
    SMTP sink; no network needed."""
    from ..demo import run_demo

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
    from ..web import serve as run_server

    app = context_of(ctx)
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

    from ..deliver.sink import SmtpSink

    with SmtpSink(out, host=host, port=port) as server:
        click.echo(f"SMTP sink on {host}:{server.port}, writing to {out}/ (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


