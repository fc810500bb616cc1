"""The small web app (`digest serve`): Starlette routes over the same library functions.

Why Starlette + uvicorn rather than Flask: the app is a handful of routes that
mostly wait on the database and the SMTP server; Starlette is small, typed, has
background tasks (the confirmation mail is sent after the response, so the
answer to POST /subscribe is the same, and as fast, whether or not the address
was known) and runs under uvicorn without a WSGI bridge.

Rules every route follows:
- a GET never changes anything (mail scanners open every link);
- every form carries a CSRF token (double submit: a random SameSite=Strict
  cookie and its HMAC in the form), except the RFC 8058 one-click POST, which
  must work without cookies;
- a token that is tampered, expired or for another purpose gets a 4xx page and
  changes nothing;
- no page shows whether an address is subscribed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import editions, mails, subscribers
from .app import Context
from .compose import MORE, weekly_period
from .domain import Personal, personalise
from .errors import SubscriberError
from .queries import editions as edition_queries
from .queries.articles import latest_change
from .sample import SAMPLE_IMAGES
from .tokens import Purpose, TokenError

WEB_TEMPLATES = Path(__file__).with_name("web_templates")
PREVIEW_ADDRESS = "reader@example.com"
CSRF_COOKIE = "digest_csrf"
ONE_CLICK = "List-Unsubscribe=One-Click"

Handler = Callable[[Request], Awaitable[Response]]


def _pages() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(WEB_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _is_local(request: Request) -> bool:
    try:
        return ipaddress.ip_address(_client(request)).is_loopback
    except ValueError:
        return False


def _local_only(handler: Handler) -> Handler:
    """Preview pages show an unsent edition: only to editors on this machine."""

    async def guarded(request: Request) -> Response:
        if not _is_local(request):
            return PlainTextResponse("Not found", status_code=404)
        return await handler(request)

    return guarded


class RateLimit:
    """At most ``limit`` events per ``window`` seconds per key (a client address)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one event for ``key``; False when it is over the limit."""
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and now - events[0] >= self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 10_000:  # forget clients idle for a whole window
                for stale in [k for k, v in self._events.items()
                              if not v or now - v[-1] >= self.window]:
                    del self._events[stale]
            return True


class SecurityHeaders(BaseHTTPMiddleware):
    """Headers every page gets: no framing (but the preview's own), no sniffing, no referrer."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        frame = "SAMEORIGIN" if request.url.path == "/preview/html" else "DENY"
        response.headers.setdefault("X-Frame-Options", frame)
        return response


class Web:
    """The routes, bound to one configured digest."""

    def __init__(self, ctx: Context, transport: Any | None = None) -> None:
        self.ctx = ctx
        self.pages = _pages()
        settings = ctx.settings
        self.transport = transport or ctx.transport()
        self.limit = RateLimit(settings.web.subscribe_per_minute)
        self.secure = settings.web.base_url.startswith("https://")
        self._key = hashlib.sha256(b"digest.csrf:" + settings.secret_key().encode()).digest()

    # -- pages and forms ---------------------------------------------------------------------

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page from web_templates/."""
        values.setdefault("publication", self.ctx.settings.publication)
        values.setdefault("theme", self.ctx.settings.theme)
        return HTMLResponse(self.pages.get_template(template).render(**values),
                            status_code=status)

    def error(self, status: int, title: str, message: str) -> HTMLResponse:
        """A 4xx page that changes nothing."""
        return self.page("message.html", status, title=title, message=message)

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def form_page(self, request: Request, template: str, status: int = 200,
                  **values: Any) -> HTMLResponse:
        """A page with a form: its CSRF token in the form, the random half in a cookie."""
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = self.page(template, status, csrf=self._sign(cookie), **values)
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict",
                            secure=self.secure, path="/")
        return response

    def csrf_ok(self, request: Request, form: Any) -> bool:
        """Whether a POSTed form carries the token that matches its cookie."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = str(form.get("csrf", ""))
        return bool(cookie) and hmac.compare_digest(self._sign(cookie), sent)

    def _claims(self, purpose: Purpose, token: str) -> subscribers.SubscriberView | None:
        claims = self.ctx.signer.read(purpose, token)  # TokenError: tampered, expired, other
        return subscribers.find(self.ctx.db, claims.subscriber_id, claims.address_hash)

    def _bad_link(self, exc: TokenError | None = None) -> HTMLResponse:
        reason = exc.message if exc else "this link is not valid (any more)"
        return self.error(400 if exc else 404, "This link does not work",
                          f"{reason[0].upper()}{reason[1:]}. Nothing was changed.")

    # -- subscribe -------------------------------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        return self.form_page(request, "subscribe.html")

    async def subscribe(self, request: Request) -> Response:
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.error(403, "Please try again",
                              "The form had expired or came from another site. Nothing was "
                              "changed; reload the page and send it again.")
        if not self.limit.allow(_client(request)):
            return self.error(429, "Too many requests",
                              "Too many subscription requests came from your address. Please "
                              "wait a minute and try again.")
        email = str(form.get("email", "")).strip()
        name = str(form.get("name", "")).strip() or None
        try:
            subscribers.normalise(email)
        except SubscriberError as exc:
            return self.form_page(request, "subscribe.html", 422, problem=exc.message,
                                  email=email, name=name or "")
        # The answer is the same, and sent before any mail, whatever is known of the address.
        task = BackgroundTask(self._request, email, name, _client(request))
        response = self.page("message.html", title="Check your inbox",
                             message="If the address can receive mail, a message is on its "
                             "way to it. Follow its link to confirm your subscription.")
        response.background = task
        return response

    def _request(self, email: str, name: str | None, client: str) -> None:
        view, notice = subscribers.request_subscription(self.ctx.db, email, now=self.ctx.now(),
                                                        name=name, client=client)
        if notice is subscribers.Notice.CONFIRM:
            self.transport.send(mails.confirmation(self.ctx, view))
        elif notice is subscribers.Notice.ALREADY:
            self.transport.send(mails.already_subscribed(self.ctx, view))

    # -- confirm ---------------------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            found = await run_in_threadpool(self._claims, Purpose.CONFIRM, token)
        except TokenError as exc:
            return self._bad_link(exc)
        if found is None:
            return self._bad_link()
        if request.method == "GET":
            return self.form_page(request, "confirm.html", subscriber=found, token=token)
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.form_page(request, "confirm.html", 403, subscriber=found, token=token,
                                  problem="The form had expired; press the button again.")
        confirmed = await run_in_threadpool(subscribers.confirm, self.ctx.db, found.id,
                                            now=self.ctx.now(), client=_client(request))
        if confirmed is None:
            return self._bad_link()
        if confirmed.status != "confirmed":
            return self.error(409, "Not confirmed",
                              "This subscription cannot be confirmed from here any more; "
                              "subscribe again to receive the round-up.")
        return self.page("message.html", title="You are subscribed",
                         message=f"Thank you. The weekly round-up of "
                         f"{self.ctx.settings.publication.name} will come to {found.email}.")

    # -- unsubscribe and preferences --------------------------------------------------------------

    def sections(self) -> list[str]:
        """The sections a reader can choose from."""
        configured = list(self.ctx.settings.digest.sections)
        if configured:
            return [*configured, MORE]
        with self.ctx.db.reader() as session:
            return edition_queries.recent_sections(session)

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            found = await run_in_threadpool(self._claims, Purpose.UNSUBSCRIBE, token)
        except TokenError as exc:
            return self._bad_link(exc)
        if request.method == "GET":
            if found is None:
                return self._bad_link()
            return self.form_page(request, "unsubscribe.html", subscriber=found, token=token,
                                  preferences_token=self._preferences_token(found),
                                  sections=self.sections())
        form = await request.form()
        one_click = str(form.get("List-Unsubscribe", "")) == "One-Click"
        if not one_click and not self.csrf_ok(request, form):
            return self.error(403, "Please try again", "The form had expired. Nothing was "
                              "changed; reload the page and press the button again.")
        if found is not None:
            await run_in_threadpool(
                subscribers.unsubscribe, self.ctx.db, found.id, now=self.ctx.now(),
                how="one-click (RFC 8058)" if one_click else "unsubscribe page")
        if one_click:
            return PlainTextResponse("Unsubscribed.")
        if found is None:
            return self._bad_link()
        return self.page("message.html", title="You have left",
                         message=f"{found.email} will receive no more editions of "
                         f"{self.ctx.settings.publication.name}. Goodbye, and thank you for "
                         "reading.")

    def _preferences_token(self, found: subscribers.SubscriberView) -> str:
        return self.ctx.signer.make(Purpose.PREFERENCES, found.id, found.email_key)

    async def preferences(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            found = await run_in_threadpool(self._claims, Purpose.PREFERENCES, token)
        except TokenError as exc:
            return self._bad_link(exc)
        if found is None:
            return self._bad_link()
        sections = self.sections()
        if request.method == "GET":
            return self.form_page(request, "preferences.html", subscriber=found, token=token,
                                  sections=sections, excluded=set(found.excluded_sections))
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.form_page(request, "preferences.html", 403, subscriber=found,
                                  token=token, sections=sections,
                                  excluded=set(found.excluded_sections),
                                  problem="The form had expired; please save again.")
        wanted = {str(v) for v in form.getlist("section")}
        excluded = [s for s in sections if s not in wanted]
        await run_in_threadpool(subscribers.set_preferences, self.ctx.db, found.id, excluded)
        return self.form_page(request, "preferences.html", subscriber=found, token=token,
                              sections=sections, excluded=set(excluded), saved=True)

    async def no_token(self, request: Request) -> Response:
        return self.page("message.html", title="Use the link in your mail",
                         message="Every edition ends with your own links to leave or to "
                         "choose sections. Use the ones at the bottom of a mail you received.")

    # -- archive ----------------------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        with self.ctx.db.reader() as session:
            rows = [(e.period, e.subject, e.completed_at)
                    for e in edition_queries.sent_editions(session)]
        return self.page("archive.html", editions=rows, tz=self.ctx.settings.timezone)

    async def archive_edition(self, request: Request) -> Response:
        with self.ctx.db.reader() as session:
            row = edition_queries.get_by_period(session, request.path_params["period"])
            if row is None or row.status != "sent":
                return self.error(404, "No such edition", "There is no sent edition by that "
                                  "name. The archive lists them all.")
            rendered = editions.stored_rendering(row)
        base = self.ctx.settings.web.base_url
        # The web copy carries no personal data: neutral words and links in their place.
        neutral = Personal("you", f"{base}/unsubscribe", f"{base}/preferences")
        return HTMLResponse(personalise(rendered.html, rendered.markers, neutral, html.escape))

    # -- preview (local editors) ----------------------------------------------------------------

    def _prepared(self) -> editions.Prepared | None:
        settings = self.ctx.settings
        period = weekly_period(self.ctx.now(), settings.timezone, settings.digest.window_days)
        return editions.prepare(self.ctx, period)

    def _sample(self, prepared: editions.Prepared) -> tuple[str, str, bytes]:
        # Never a real subscriber's address on a web page.
        recipient = self.ctx.recipient(0, PREVIEW_ADDRESS, PREVIEW_ADDRESS, None,
                                       prepared.rendered.nonce)
        copy = editions.sample_copy(self.ctx, prepared.rendered, recipient)
        return copy.html, copy.text, copy.message

    async def preview(self, request: Request) -> Response:
        prepared = await run_in_threadpool(self._prepared)
        version = await run_in_threadpool(self._version)
        if prepared is None:
            return self.page("preview.html", nothing=True, version=version)
        page, text, data = await run_in_threadpool(self._sample, prepared)
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        headers = [line.split(": ", 1) for line in head.replace("\r\n ", " ").split("\r\n")
                   if ": " in line]
        return self.page("preview.html", nothing=False, subject=prepared.rendered.subject,
                         articles=len(prepared.plan.articles), text=text, headers=headers,
                         size_kb=len(page.encode()) / 1024, version=version)

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

    async def home(self, request: Request) -> Response:
        return self.form_page(request, "subscribe.html")

    def routes(self) -> list[Route | Mount]:
        """Every route of the app."""
        return [
            Route("/", self.home),
            Route("/subscribe", self.subscribe_form, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/confirm/{token}", self.confirm, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["GET", "POST"]),
            Route("/unsubscribe", self.no_token),
            Route("/preferences/{token}", self.preferences, methods=["GET", "POST"]),
            Route("/preferences", self.no_token),
            Route("/archive", self.archive),
            Route("/archive/{period}", self.archive_edition),
            Route("/preview", _local_only(self.preview)),
            Route("/preview/html", _local_only(self.preview_html)),
            Route("/preview/version", _local_only(self.preview_version)),
            Mount("/static/sample", app=StaticFiles(directory=str(SAMPLE_IMAGES)),
                  name="sample"),
        ]


def create_app(ctx: Context, transport: Any | None = None) -> Starlette:
    """The ASGI app for one configured digest."""
    return Starlette(routes=Web(ctx, transport).routes(),
                     middleware=[Middleware(SecurityHeaders)])


def serve(ctx: Context, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    behind = ctx.settings.web.behind_proxy
    uvicorn.run(create_app(ctx), host=host, port=port, log_level="info",
                proxy_headers=behind, forwarded_allow_ips="127.0.0.1,::1" if behind else None,
                server_header=False)
