"""Subscribers through the real web app (uvicorn on loopback) and a real SMTP server.

The end-to-end test follows one reader: subscribe → confirmation mail → the GET of the
link changes nothing → POST confirms → an edition is sent → the one-click POST named in
its List-Unsubscribe header unsubscribes → the next edition skips the address.
"""

from __future__ import annotations

import email
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage

import httpx
import pytest

from digest import editions, subscribers
from digest.app import Context
from digest.compose import explicit_period, weekly_period
from digest.deliver.sink import SmtpSink, free_port
from digest.deliver.smtp import SMTPTransport
from digest.demo import shifted_feed
from digest.gather.run import gather
from digest.models import EditionVariant, Subscriber, SubscriberStatus
from digest.sample import SAMPLE_FEED
from digest.tokens import Purpose
from tests.conftest import FeedServer, Route, WebServer

SECTIONS = ('sections = ["Middle East", "Europe", "Asia", "Africa"]\n'
            '[digest.aliases]\n"* | Middle East" = "Middle East"\n"* | Europe" = "Europe"\n'
            '"* | Asia" = "Asia"\n"* | Africa" = "Africa"\n')


class Site:
    """A configured digest with its web app, SMTP sink and feed."""

    def __init__(self, ctx: Context, web: WebServer, sink: SmtpSink) -> None:
        self.ctx, self.web, self.sink = ctx, web, sink
        self.http = httpx.Client(base_url=web.base, follow_redirects=False)

    def form(self, path: str) -> str:
        """GET a page with a form; return its CSRF token (the cookie stays in the client)."""
        page = self.http.get(path)
        assert page.status_code == 200, page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def subscribe(self, address: str, **data: str) -> httpx.Response:
        token = self.form("/subscribe")
        return self.http.post("/subscribe", data={"csrf": token, "email": address, **data})

    def mails_to(self, address: str) -> list[EmailMessage]:
        found = []
        for item in self.sink.received:
            if address.lower() in (r.lower() for r in item.recipients):
                msg = email.message_from_bytes(item.data, policy=policy.default)
                assert isinstance(msg, EmailMessage)
                found.append(msg)
        return found

    def status(self, address: str) -> str:
        with self.ctx.db.reader() as session:
            row = session.query(Subscriber).filter_by(email_key=address.lower()).one_or_none()
            return row.status if row else "absent"

    def send(self, period=None):  # type: ignore[no-untyped-def]
        settings = self.ctx.settings
        period = period or weekly_period(self.ctx.now(), settings.timezone,
                                         settings.digest.window_days)
        return editions.send(self.ctx, period, SMTPTransport(settings.smtp), check_links=False)


def _wait_for(predicate: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _text(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]


@pytest.fixture
def site(make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
         web_server: Callable[..., WebServer]) -> Site:
    now = datetime.now(UTC)
    body = shifted_feed(SAMPLE_FEED.read_bytes(), now)
    feed_server.routes["/feed"] = Route(body)
    port = free_port()
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=smtp_sink.port,
                       web=f'base_url = "http://127.0.0.1:{port}"\nsubscribe_per_minute = 5',
                       digest=SECTIONS)
    gather(ctx.settings, ctx.db)
    return Site(ctx, web_server(ctx, port), smtp_sink)


def test_subscribe_confirm_receive_one_click_leave(site: Site, feed_server: FeedServer) -> None:
    answer = site.subscribe("Reader@Example.org", name="Ree Der")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    _wait_for(lambda: bool(site.mails_to("reader@example.org")))
    confirm_mail = site.mails_to("reader@example.org")[0]
    link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", _text(confirm_mail)).group(1)
    assert site.status("reader@example.org") == "pending"

    shown = site.http.get(link)  # what a link scanner does
    assert shown.status_code == 200 and "Yes, subscribe me" in shown.text
    assert site.status("reader@example.org") == "pending"

    token = re.search(r'name="csrf" value="([^"]+)"', shown.text).group(1)
    done = site.http.post(link, data={"csrf": token})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert site.status("reader@example.org") == "confirmed"

    outcome = site.send()
    assert outcome.state == editions.SendState.COMPLETE
    edition = site.mails_to("Reader@Example.org")[-1]
    assert edition["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = edition["List-Unsubscribe"].strip("<>")
    # RFC 8058: a POST with exactly this body, no cookie, no CSRF token.
    one_click = httpx.post(url, content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert one_click.status_code == 200 and "set-cookie" not in one_click.headers
    assert site.status("reader@example.org") == "unsubscribed"

    feed_server.routes["/feed"] = Route(feed_server.routes["/feed"].body.replace(
        b"</channel>",
        b"<item><title>A new story</title><link>https://meridian-review.example/new/</link>"
        b"<category>Analysis | Europe</category><pubDate>"
        + datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000").encode()
        + b"</pubDate></item></channel>"))
    gather(site.ctx.settings, site.ctx.db)
    subscribers.add(site.ctx.db, "other@example.org", now=site.ctx.now())
    before = len(site.mails_to("reader@example.org"))
    week = weekly_period(site.ctx.now(), site.ctx.settings.timezone, 7)
    following = site.send(explicit_period(week.start, week.end + timedelta(hours=1),
                                          site.ctx.settings.timezone))
    assert following.state == editions.SendState.COMPLETE
    assert len(site.mails_to("other@example.org")) == 1
    assert len(site.mails_to("reader@example.org")) == before


def test_get_never_changes_anything(site: Site) -> None:
    view = subscribers.add(site.ctx.db, "ann@example.org", now=site.ctx.now())
    unsubscribe = site.ctx.signer.make(Purpose.UNSUBSCRIBE, view.id, view.email_key)
    preferences = site.ctx.signer.make(Purpose.PREFERENCES, view.id, view.email_key)
    for path in (f"/unsubscribe/{unsubscribe}", f"/preferences/{preferences}", "/subscribe",
                 "/archive", "/"):
        assert site.http.get(path).status_code == 200
    assert site.status("ann@example.org") == "confirmed"


@pytest.mark.parametrize("case", ["tampered", "expired", "wrong purpose", "garbage"])
def test_bad_tokens_get_a_4xx_page_and_change_nothing(site: Site, case: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    view, _ = subscribers.request_subscription(site.ctx.db, "pat@example.org",
                                               now=site.ctx.now())
    signer = site.ctx.signer
    if case == "expired":
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 8 * 24 * 3600)
        token = signer.make(Purpose.CONFIRM, view.id, view.email_key)
        monkeypatch.setattr(time, "time", real)
    elif case == "wrong purpose":
        token = signer.make(Purpose.PREFERENCES, view.id, view.email_key)
    elif case == "tampered":
        token = signer.make(Purpose.CONFIRM, view.id, view.email_key)
        token = token[:-3] + ("xyz" if not token.endswith("xyz") else "abc")
    else:
        token = "not-a-token"
    csrf = site.form("/subscribe")
    for method in ("GET", "POST"):
        answer = site.http.request(method, f"/confirm/{token}", data={"csrf": csrf})
        assert 400 <= answer.status_code < 500, answer.status_code
        assert "Nothing was changed" in answer.text
    assert site.status("pat@example.org") == "pending"
    if case == "expired":
        assert "expired" in answer.text


def test_a_token_for_a_reused_id_does_not_touch_the_new_person(site: Site) -> None:
    first = subscribers.add(site.ctx.db, "first@example.org", now=site.ctx.now())
    token = site.ctx.signer.make(Purpose.UNSUBSCRIBE, first.id, first.email_key)
    subscribers.remove(site.ctx.db, "first@example.org")
    second = subscribers.add(site.ctx.db, "second@example.org", now=site.ctx.now())
    assert second.id == first.id  # SQLite hands the id out again
    answer = httpx.post(site.web.url(f"/unsubscribe/{token}"),
                        content=b"List-Unsubscribe=One-Click",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    assert site.status("second@example.org") == "confirmed"


def test_no_enumeration(site: Site) -> None:
    subscribers.add(site.ctx.db, "known@example.org", now=site.ctx.now())
    subscribers.add(site.ctx.db, "waiting@example.org", now=site.ctx.now(),
                    status=SubscriberStatus.PENDING)
    answers = [site.subscribe(a) for a in ("known@example.org", "waiting@example.org",
                                           "unknown@example.org")]
    assert len({(a.status_code, a.text) for a in answers}) == 1
    _wait_for(lambda: len(site.sink.received) >= 3)
    subjects = {m["Subject"] for a in ("known@example.org", "waiting@example.org",
                                       "unknown@example.org") for m in site.mails_to(a)}
    assert any("already subscribed" in s for s in subjects)
    assert any("Confirm your subscription" in s for s in subjects)
    # Asking again at once mails nobody: the form cannot be used to flood an inbox.
    before = len(site.sink.received)
    again = site.subscribe("known@example.org")
    assert (again.status_code, again.text) == (answers[0].status_code, answers[0].text)
    time.sleep(0.5)
    assert len(site.sink.received) == before


def test_forms_need_their_csrf_token(site: Site) -> None:
    refused = site.http.post("/subscribe", data={"email": "x@example.org"})
    assert refused.status_code == 403
    assert site.status("x@example.org") == "absent"
    view = subscribers.add(site.ctx.db, "y@example.org", now=site.ctx.now())
    token = site.ctx.signer.make(Purpose.UNSUBSCRIBE, view.id, view.email_key)
    forged = httpx.post(site.web.url(f"/unsubscribe/{token}"), data={"csrf": "guess"})
    assert forged.status_code == 403 and site.status("y@example.org") == "confirmed"
    csrf = site.form(f"/unsubscribe/{token}")
    done = site.http.post(f"/unsubscribe/{token}", data={"csrf": csrf})
    assert done.status_code == 200 and "You have left" in done.text
    assert site.status("y@example.org") == "unsubscribed"


def test_subscriptions_are_rate_limited_per_client(site: Site) -> None:
    codes = [site.subscribe(f"r{i}@example.org").status_code for i in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]


def test_invalid_address_is_reported_on_the_form(site: Site) -> None:
    answer = site.subscribe("not an address")
    assert answer.status_code == 422 and "not a valid email address" in answer.text


def test_preferences_shape_the_edition_rendered_once_per_set(site: Site) -> None:
    people = ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]
    for person in people:
        subscribers.add(site.ctx.db, person, now=site.ctx.now())
    for person in ("b@example.org", "c@example.org"):
        view = next(v for v in subscribers.list_subscribers(site.ctx.db) if v.email == person)
        token = site.ctx.signer.make(Purpose.PREFERENCES, view.id, view.email_key)
        csrf = site.form(f"/preferences/{token}")
        saved = site.http.post(f"/preferences/{token}",
                               data={"csrf": csrf, "section": ["Middle East", "Asia", "Africa",
                                                               "More"]})
        assert saved.status_code == 200 and "Saved." in saved.text
    assert site.send().state == editions.SendState.COMPLETE
    texts = {p: _text(site.mails_to(p)[0]) for p in people}
    assert "\nEUROPE\n" in texts["a@example.org"] and "\nEUROPE\n" in texts["d@example.org"]
    assert "\nEUROPE\n" not in texts["b@example.org"]
    assert texts["b@example.org"].replace("b@example.org", "X") == (
        texts["c@example.org"].replace("c@example.org", "X").replace(
            re.search(r"/unsubscribe/\S+", texts["c@example.org"]).group(0),
            re.search(r"/unsubscribe/\S+", texts["b@example.org"]).group(0)).replace(
            re.search(r"/preferences/\S+", texts["c@example.org"]).group(0),
            re.search(r"/preferences/\S+", texts["b@example.org"]).group(0)))
    with site.ctx.db.reader() as session:
        assert session.query(EditionVariant).count() == 1  # one distinct set, rendered once


def test_archive_has_the_sent_editions_and_no_personal_data(site: Site) -> None:
    subscribers.add(site.ctx.db, "private@example.org", now=site.ctx.now())
    outcome = site.send()
    index = site.http.get("/archive").text
    assert f"/archive/{outcome.period}" in index
    page = site.http.get(f"/archive/{outcome.period}").text
    assert page.startswith("<!doctype html>") and "private@example.org" not in page
    assert "/unsubscribe/" not in page and "%%digest" not in page
    assert site.http.get("/archive/1999-W01").status_code == 404
