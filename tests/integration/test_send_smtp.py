"""Sending an edition to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import email
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest

from digest import editions, subscribers
from digest.app import Context
from digest.compose import weekly_period
from digest.deliver.sink import SmtpSink, free_port
from digest.deliver.smtp import SMTPTransport
from digest.errors import DeliveryError
from digest.gather.run import gather
from digest.models import Delivery, Subscriber
from digest.tokens import Purpose
from tests.conftest import FeedServer, Route
from tests.htmlcheck import read_html

ADDRESSES = ["ann@example.org", "bob@example.net", "cy@example.com"]


def _feed(feed_server: FeedServer, ctx_now: object = None) -> None:
    from datetime import UTC, datetime

    from digest.demo import shifted_feed
    from digest.sample import SAMPLE_FEED

    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(),
                                                     datetime.now(UTC)))


@pytest.fixture
def ready(feed_server: FeedServer, smtp_sink: SmtpSink,
          make_context: Callable[..., Context]) -> Context:
    _feed(feed_server)
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=smtp_sink.port)
    gather(ctx.settings, ctx.db)
    for address in ADDRESSES:
        subscribers.add(ctx.db, address, now=ctx.now())
    return ctx


def _period(ctx: Context):  # type: ignore[no-untyped-def]
    return weekly_period(ctx.now(), ctx.settings.timezone, ctx.settings.digest.window_days)


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_each_confirmed_subscriber_gets_one_complete_message(
    ready: Context, smtp_sink: SmtpSink
) -> None:
    outcome = editions.send(ready, _period(ready), SMTPTransport(ready.settings.smtp))
    assert outcome.state == editions.SendState.COMPLETE
    received = smtp_sink.received
    assert sorted(r.recipients[0] for r in received) == sorted(ADDRESSES)
    for item in received:
        msg = _parse(item.data)
        assert msg.get_content_type() == "multipart/alternative"
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert html.lstrip().lower().startswith("<!doctype html>")
        assert len(html.encode()) < 102 * 1024
        page = read_html(html)
        assert all(page.attrs("img", "alt"))
        assert all(h.startswith(("https://", "http://")) for h in page.attrs("a", "href") if h)
        assert "%%digest" not in html and "%%digest" not in text
        assert item.recipients[0] in text
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = msg["List-Unsubscribe"].strip("<>")
        assert url.startswith("https://news.example.org/unsubscribe/")
        claims = ready.signer.read(Purpose.UNSUBSCRIBE, url.rsplit("/", 1)[1])
        with ready.db.reader() as session:
            sub = session.get(Subscriber, claims.subscriber_id)
            assert sub is not None and sub.email == item.recipients[0]
        assert url in text and url in html
        assert "mailto:" not in msg["List-Unsubscribe"]
    with ready.db.reader() as session:
        assert {d.status for d in session.query(Delivery)} == {"sent"}


def test_a_second_send_for_the_period_sends_nothing(ready: Context, smtp_sink: SmtpSink) -> None:
    period = _period(ready)
    editions.send(ready, period, SMTPTransport(ready.settings.smtp))
    again = editions.send(ready, period, SMTPTransport(ready.settings.smtp))
    assert again.state == editions.SendState.ALREADY_SENT
    assert len(smtp_sink.received) == len(ADDRESSES)


def test_next_period_with_no_new_articles_sends_nothing(
    ready: Context, smtp_sink: SmtpSink
) -> None:
    from digest.compose import explicit_period

    editions.send(ready, _period(ready), SMTPTransport(ready.settings.smtp))
    week = _period(ready)
    other = explicit_period(week.start, week.end, ready.settings.timezone)
    outcome = editions.send(ready, other, SMTPTransport(ready.settings.smtp))
    assert outcome.state == editions.SendState.NOTHING_NEW
    assert len(smtp_sink.received) == len(ADDRESSES)


def test_unsubscribed_subscriber_is_not_mailed(ready: Context, smtp_sink: SmtpSink) -> None:
    subscribers.remove(ready.db, "bob@example.net")
    editions.send(ready, _period(ready), SMTPTransport(ready.settings.smtp))
    assert sorted(r.recipients[0] for r in smtp_sink.received) == ["ann@example.org",
                                                                   "cy@example.com"]


def test_unreachable_smtp_server_is_one_clear_error(
    feed_server: FeedServer, make_context: Callable[..., Context]
) -> None:
    _feed(feed_server)
    port = free_port()
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=port)
    gather(ctx.settings, ctx.db)
    subscribers.add(ctx.db, "ann@example.org", now=ctx.now())
    with pytest.raises(DeliveryError, match=f"cannot connect to SMTP server 127.0.0.1:{port}"):
        editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp))
    with ctx.db.reader() as session:
        # Nothing was lost: the delivery is still owed and will go out on the next run.
        assert [d.status for d in session.query(Delivery)] == ["pending"]


def test_permanent_refusal_fails_the_delivery_and_bounces_the_address(
    feed_server: FeedServer, make_context: Callable[..., Context], tmp_path: object
) -> None:
    _feed(feed_server)
    refuse = {"bob@example.net": "550 5.1.1 No such user"}
    with SmtpSink(rcpt_reply=refuse.get) as sink:
        ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=sink.port)
        gather(ctx.settings, ctx.db)
        for address in ADDRESSES:
            subscribers.add(ctx.db, address, now=ctx.now())
        outcome = editions.send(ctx, _period(ctx), SMTPTransport(ctx.settings.smtp))
        assert outcome.state == editions.SendState.COMPLETE
        assert outcome.run is not None and outcome.run.failed == 1
        assert outcome.run.failures[0][0] == "bob@example.net"
        assert "550" in outcome.run.failures[0][1]
        assert len(sink.received) == 2
    with ctx.db.reader() as session:
        bob = session.query(Subscriber).filter_by(email="bob@example.net").one()
        assert bob.status == "bounced"
        failed = session.query(Delivery).filter_by(status="failed").one()
        assert "550" in (failed.last_reply or "")


def test_test_send_goes_to_one_address_and_leaves_the_ledger_alone(
    ready: Context, smtp_sink: SmtpSink
) -> None:
    outcome = editions.send_test(ready, _period(ready), "editor@example.org",
                                 SMTPTransport(ready.settings.smtp))
    assert outcome.state == editions.SendState.COMPLETE
    assert [r.recipients for r in smtp_sink.received] == [("editor@example.org",)]
    assert _parse(smtp_sink.received[0].data)["Subject"].startswith("[TEST] ")
    with ready.db.reader() as session:
        assert session.query(Delivery).count() == 0
    real = editions.send(ready, _period(ready), SMTPTransport(ready.settings.smtp))
    assert real.state == editions.SendState.COMPLETE


def test_dry_run_builds_everything_and_sends_nothing(ready: Context, smtp_sink: SmtpSink) -> None:
    outcome = editions.dry_run(ready, _period(ready))
    assert outcome.run is not None and outcome.run.sent == len(ADDRESSES)
    assert smtp_sink.received == []
    with ready.db.reader() as session:
        assert session.query(Delivery).count() == 0


def test_an_updated_article_stays_featured(ready: Context, smtp_sink: SmtpSink,
                                           feed_server: FeedServer) -> None:
    from digest.compose import explicit_period

    editions.send(ready, _period(ready), SMTPTransport(ready.settings.smtp))
    route = feed_server.routes["/feed"]
    feed_server.routes["/feed"] = Route(route.body.replace(b"Yemen's forgotten ports",
                                                           b"Yemen's forgotten ports, revisited"))
    report = gather(ready.settings, ready.db)
    assert report.sources[0].updated == 1 and report.new == 0
    week = _period(ready)
    outcome = editions.send(ready, explicit_period(week.start, week.end, ready.settings.timezone),
                            SMTPTransport(ready.settings.smtp))
    assert outcome.state == editions.SendState.NOTHING_NEW
