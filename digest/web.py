"""The small web app (`digest serve`): Starlette routes over the same library functions.

This module holds routing and HTTP concerns only; every decision is made in the
library (editions, subscribers, tokens). Pages are rendered from
digest/web_templates/ with autoescaping.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import editions
from .app import Context
from .compose import weekly_period
from .deliver.message import MessageTemplate, Recipient, message_id
from .domain import personalise
from .queries.articles import latest_change
from .sample import SAMPLE_IMAGES

WEB_TEMPLATES = Path(__file__).with_name("web_templates")
PREVIEW_ADDRESS = "reader@example.com"


def _pages() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(WEB_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Handler = Callable[[Request], Awaitable[Response]]


def _local_only(handler: Handler) -> Handler:
    """Preview pages show an unsent edition: only to editors on this machine."""

    async def guarded(request: Request) -> Response:
        if not _is_local(request):
            return PlainTextResponse("Not found", status_code=404)
        return await handler(request)

    return guarded


class Web:
    """The routes, bound to one configured digest."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pages = _pages()

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page from web_templates/."""
        values.setdefault("publication", self.ctx.settings.publication)
        values.setdefault("theme", self.ctx.settings.theme)
        return HTMLResponse(self.pages.get_template(name).render(**values), status_code=status)

    # -- preview (local editors) ---------------------------------------------------------

    def _prepared(self) -> editions.Prepared | None:
        settings = self.ctx.settings
        period = weekly_period(self.ctx.now(), settings.timezone, settings.digest.window_days)
        return editions.prepare(self.ctx, period)

    def _sample(self, prepared: editions.Prepared) -> tuple[str, str, bytes]:
        # Never a real subscriber's address on a web page.
        recipient = Recipient(
            PREVIEW_ADDRESS, None, self.ctx.personal_links(0, PREVIEW_ADDRESS, PREVIEW_ADDRESS),
            message_id(prepared.rendered.nonce, 0, self.ctx.settings.publication.domain))
        rendered = prepared.rendered
        page = personalise(rendered.html, rendered.markers, recipient.personal, html.escape)
        text = personalise(rendered.text, rendered.markers, recipient.personal)
        message = MessageTemplate(rendered, self.ctx.settings.publication).build(
            recipient, date=self.ctx.now())
        return page, text, message.data

    async def preview(self, request: Request) -> Response:
        prepared = await run_in_threadpool(self._prepared)
        if prepared is None:
            return self.page("preview.html", nothing=True, version=self._version())
        page, text, data = await run_in_threadpool(self._sample, prepared)
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        headers = [line.split(": ", 1) for line in head.replace("\r\n ", " ").split("\r\n")
                   if ": " in line]
        return self.page("preview.html", nothing=False, subject=prepared.rendered.subject,
                         articles=len(prepared.plan.articles), text=text, headers=headers,
                         size_kb=len(page.encode()) / 1024, version=self._version())

    async def preview_html(self, request: Request) -> Response:
        prepared = await run_in_threadpool(self._prepared)
        if prepared is None:
            return HTMLResponse("<p>Nothing to preview.</p>")
        page, _, _ = await run_in_threadpool(self._sample, prepared)
        return HTMLResponse(page)

    def _version(self) -> str:
        """Changes whenever a template, the intro, the config or an article changes."""
        settings = self.ctx.settings
        paths: list[Path] = [settings.path]
        if settings.digest.templates is not None:
            paths += sorted(settings.digest.templates.rglob("*"))
        if settings.digest.intro_file is not None:
            paths.append(settings.digest.intro_file)
        stamp = hashlib.sha256()
        for path in paths:
            try:
                stamp.update(f"{path}:{path.stat().st_mtime_ns}".encode())
            except OSError:
                stamp.update(f"{path}:missing".encode())
        with self.ctx.db.reader() as session:
            stamp.update(str(latest_change(session)).encode())
        return stamp.hexdigest()[:16]

    async def preview_version(self, request: Request) -> Response:
        return JSONResponse({"version": await run_in_threadpool(self._version)})

    def routes(self) -> list[Route | Mount]:
        """Every route of the app."""
        return [
            Route("/preview", _local_only(self.preview)),
            Route("/preview/html", _local_only(self.preview_html)),
            Route("/preview/version", _local_only(self.preview_version)),
            Mount("/static/sample", app=StaticFiles(directory=str(SAMPLE_IMAGES)),
                  name="sample"),
        ]


def create_app(ctx: Context) -> Starlette:
    """The ASGI app for one configured digest."""
    return Starlette(routes=Web(ctx).routes())


def serve(ctx: Context, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(ctx), host=host, port=port, log_level="info",
                proxy_headers=False, server_header=False)
