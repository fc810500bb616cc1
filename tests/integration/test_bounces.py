"""Bounces, complaints and mailed unsubscribe requests, against editions really sent.

Every edition here goes to the real SMTP sink; the returned mails are the templates in
tests/data/bounces (written to RFC 3464 and RFC 5965) filled in with the VERP sender,
Message-ID and tagged unsubscribe address of those real deliveries.
"""

from __future__ import annotations

import email
import mailbox
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from itertools import pairwise
from pathlib import Path

import pytest

from digest import editions, subscribers
from digest.app import Context
from digest.bounces import Kind, Reader, apply, process_maildir
from digest.compose import explicit_period
from digest.deliver.message import message_id
from digest.deliver.sink import Received, SmtpSink
from digest.deliver.smtp import SMTPTransport
from digest.deliver.verp import read_token, tag_of
from digest.demo import shifted_feed
from digest.domain import Period
from digest.gather.run import gather
from digest.models import Delivery, Edition, Subscriber
from digest.sample import SAMPLE_FEED
from tests.conftest import DATA, SECRET, FeedServer, Route, run_digest

BOUNCES = "bounces@news.example.org"
UNSUBSCRIBE = "unsubscribe@news.example.org"
BOUNCES_TABLE = f'[bounces]\naddress = "{BOUNCES}"\nunsubscribe_address = "{UNSUBSCRIBE}"\n'
VERP = re.compile(r"bounces\+(\d+)-(\d+)-([0-9a-f]{12})@news\.example\.org")
MAILTO = re.compile(r"<mailto:(unsubscribe\+(\d+)-([0-9a-f]{12})@news\.example\.org)"
                    r"\?subject=unsubscribe>")

# Hours before now at which the editions' periods are cut. The bundled sample's 15
# articles, shifted so the newest is two hours old, lie 2, 6, 9, 14, 20, 26, 31, 38, 44,
# 50, 57, 63, 70, 80 and 90 hours back: every slice holds at least two of them.
CUTS = (100, 75, 60, 47, 35, 17, 0)


@dataclass(frozen=True)
class Copy:
    """What one reader was sent, as the sink received it."""

    rcpt: str
    verp: str
    message_id: str
    unsubscribe: str
    edition_id: int
    subscriber_id: int


def _context(make_context: Callable[..., Context], feed_server: FeedServer, sink: SmtpSink,
             extra: str = BOUNCES_TABLE) -> Context:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    ctx = make_context(feeds=[("Meridian", feed_server.url("/feed"))], smtp_port=sink.port,
                       extra=extra)
    gather(ctx.settings, ctx.db)
    return ctx


def _add(ctx: Context, *addresses: str) -> dict[str, int]:
    return {a: subscribers.add(ctx.db, a, now=ctx.now()).id for a in addresses}


def _periods(ctx: Context) -> list[Period]:
    """Consecutive periods, oldest first, each with articles of its own."""
    now = ctx.now()
    return [explicit_period(now - timedelta(hours=start), now - timedelta(hours=end),
                            ctx.settings.timezone)
            for start, end in pairwise(CUTS)]


def _send(ctx: Context, sink: SmtpSink, period: Period) -> dict[str, Copy]:
    """Send one edition; what each reader got, by address."""
    before = len(sink.received)
    outcome = editions.send(ctx, period, SMTPTransport(ctx.settings.smtp), check_links=False)
    assert outcome.state == editions.SendState.COMPLETE, outcome
    return _copies(sink.received[before:])


def _copies(received: Sequence[Received]) -> dict[str, Copy]:
    copies = {}
    for item in received:
        msg = email.message_from_bytes(item.data, policy=policy.default)
        verp = VERP.fullmatch(item.mail_from)
        mailto = MAILTO.search(str(msg["List-Unsubscribe"]))
        assert verp is not None, item.mail_from
        assert mailto is not None, msg["List-Unsubscribe"]
        copies[item.recipients[0]] = Copy(
            rcpt=item.recipients[0], verp=item.mail_from, message_id=str(msg["Message-ID"]),
            unsubscribe=mailto.group(1), edition_id=int(verp.group(1)),
            subscriber_id=int(verp.group(2)))
    return copies


def _mail(template: str, copy: Copy | None = None, **values: str) -> bytes:
    """A sample mail from tests/data/bounces filled in for one real delivery."""
    text = (DATA / "bounces" / f"{template}.eml.tmpl").read_text(encoding="utf-8")
    fill = {"BOUNCES": BOUNCES}
    if copy is not None:
        fill |= {"VERP": copy.verp, "MESSAGE_ID": copy.message_id, "RCPT": copy.rcpt,
                 "UNSUB": copy.unsubscribe}
    fill |= values
    for key, value in fill.items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, f"{template}: a placeholder was left unfilled"
    return text.encode("utf-8")


def _maildir(path: Path, mails: Sequence[bytes]) -> Path:
    box = mailbox.Maildir(str(path), create=True)
    for data in mails:
        box.add(data)
    box.close()
    return path


def _state(ctx: Context) -> dict[str, tuple[str, int, int]]:
    """Each subscriber's (status, bounce count, soft bounces in a row), by address."""
    with ctx.db.reader() as session:
        return {s.email: (s.status, s.bounce_count, s.soft_bounces)
                for s in session.query(Subscriber)}


def _deliveries(ctx: Context) -> dict[tuple[int, int | None], tuple[str, str | None]]:
    """Each delivery's (status, last reply), by (edition id, subscriber id)."""
    with ctx.db.reader() as session:
        return {(d.edition_id, d.subscriber_id): (d.status, d.last_reply)
                for d in session.query(Delivery)}


def _status(ctx: Context, address: str) -> str:
    return _state(ctx)[address][0]


def _subjects(box: mailbox.Maildir) -> list[str]:
    return sorted(str(message["Subject"]) for message in box)  # a Mailbox iterates messages


# -- what goes out ------------------------------------------------------------------------------


def test_each_message_has_its_own_verp_sender_and_a_mailto_unsubscribe(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    ids = _add(ctx, "ann@example.org", "bob@example.net", "cy@example.com")
    period = _periods(ctx)[-1]
    outcome = editions.send(ctx, period, SMTPTransport(ctx.settings.smtp), check_links=False)
    assert outcome.state == editions.SendState.COMPLETE
    with ctx.db.reader() as session:
        edition = session.query(Edition).one()
        edition_id, nonce = edition.id, edition.nonce
    assert sorted(r.recipients[0] for r in smtp_sink.received) == sorted(ids)
    senders, mailtos = set(), set()
    for item in smtp_sink.received:
        rcpt = item.recipients[0]
        msg = email.message_from_bytes(item.data, policy=policy.default)
        verp = VERP.fullmatch(item.mail_from)
        assert verp is not None, f"envelope sender {item.mail_from!r} is not a VERP address"
        assert (int(verp.group(1)), int(verp.group(2))) == (edition_id, ids[rcpt])
        token = tag_of(item.mail_from, BOUNCES)
        assert token is not None
        assert read_token(SECRET, "bounce", token, 2) == (edition_id, ids[rcpt])
        # The header From stays the publication's; only the envelope names the delivery.
        assert msg["From"].addresses[0].addr_spec == "digest@news.example.org"
        assert msg["Message-ID"] == message_id(nonce, ids[rcpt], "news.example.org", SECRET)
        unsubscribe = str(msg["List-Unsubscribe"])
        links = [part.strip() for part in unsubscribe.split(",")]
        assert len(links) == 2, unsubscribe
        assert links[0].startswith("<https://news.example.org/unsubscribe/")
        mailto = MAILTO.fullmatch(links[1])
        assert mailto is not None, unsubscribe
        assert int(mailto.group(2)) == ids[rcpt]
        unsub_token = tag_of(mailto.group(1), UNSUBSCRIBE)
        assert unsub_token is not None
        assert read_token(SECRET, "unsubscribe", unsub_token, 1) == (ids[rcpt],)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        senders.add(item.mail_from)
        mailtos.add(mailto.group(1))
    assert len(senders) == len(mailtos) == 3


def test_a_bounce_address_alone_gives_verp_but_no_mailto(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink,
                   extra=f'[bounces]\naddress = "{BOUNCES}"\n')
    _add(ctx, "ann@example.org")
    editions.send(ctx, _periods(ctx)[-1], SMTPTransport(ctx.settings.smtp), check_links=False)
    [item] = smtp_sink.received
    assert VERP.fullmatch(item.mail_from)
    msg = email.message_from_bytes(item.data, policy=policy.default)
    assert "mailto:" not in str(msg["List-Unsubscribe"])
    assert str(msg["List-Unsubscribe"]).startswith("<https://news.example.org/unsubscribe/")


# -- `digest bounces process` on a real Maildir ------------------------------------------------


READERS = {
    "hard": "hana@example.org",
    "soft": "sol@example.net",
    "delivered": "del@example.com",
    "message_id": "mio@example.org",
    "complaint": "carl@example.net",
    "unsubscribe": "una@example.com",
    "away": "otto@example.org",
}


def test_bounces_process_acts_on_each_kind_of_mail_in_a_maildir(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    ids = _add(ctx, *READERS.values())
    sent = _send(ctx, smtp_sink, _periods(ctx)[-1])
    assert set(sent) == set(READERS.values())
    copy = {role: sent[address] for role, address in READERS.items()}
    edition_id = copy["hard"].edition_id
    path = _maildir(tmp_path / "Maildir", [
        _mail("hard-bounce", copy["hard"]),
        _mail("soft-bounce", copy["soft"]),
        _mail("delivered", copy["delivered"]),
        _mail("hard-bounce-message-id-only", copy["message_id"]),
        _mail("abuse-report", copy["complaint"]),
        _mail("unsubscribe-request", copy["unsubscribe"]),
        _mail("out-of-office", copy["away"]),
    ])
    before = _deliveries(ctx)
    assert {status for status, _ in before.values()} == {"sent"}

    ran = run_digest("bounces", "process", "--maildir", str(path), cwd=tmp_path,
                     env={"DIGEST_SECRET_KEY": SECRET})

    assert ran.code == 0, ran.err
    assert "Traceback" not in ran.err
    out = ran.out.splitlines()
    for line in ("hard bounce: 2", "soft bounce: 1", "complaint: 1", "unsubscribe request: 1",
                 "not a bounce: 1", "unknown: 1",
                 f"7 messages read from {path}; 1 left in place"):
        assert line in out, ran.out
    unmatched = [line for line in ran.err.splitlines() if "left in place" in line]
    assert len(unmatched) == 1, ran.err
    assert "Automatic reply: The Test Review" in unmatched[0]

    state = _state(ctx)
    deliveries = _deliveries(ctx)
    # The hard bounce, matched by its VERP address.
    assert state[READERS["hard"]][:2] == ("bounced", 1)
    status, reply = deliveries[(edition_id, ids[READERS["hard"]])]
    assert status == "failed"
    assert reply is not None and "5.1.1" in reply and "550" in reply
    # The hard bounce that names no VERP address, matched by the quoted Message-ID.
    assert state[READERS["message_id"]][:2] == ("bounced", 1)
    status, reply = deliveries[(edition_id, ids[READERS["message_id"]])]
    assert status == "failed" and reply is not None and "5.1.10" in reply
    # The soft bounce counts, but one alone suppresses nobody.
    assert state[READERS["soft"]] == ("confirmed", 0, 1)
    assert deliveries[(edition_id, ids[READERS["soft"]])][0] == "sent"
    assert state[READERS["complaint"]][0] == "complained"
    assert state[READERS["unsubscribe"]][0] == "unsubscribed"
    # A "delivered" DSN and an auto-reply change nothing.
    assert state[READERS["delivered"]] == ("confirmed", 0, 0)
    assert state[READERS["away"]] == ("confirmed", 0, 0)
    for role in ("soft", "delivered", "complaint", "unsubscribe", "away"):
        key = (edition_id, ids[READERS[role]])
        assert deliveries[key] == before[key], role
    with ctx.db.reader() as session:
        una = session.query(Subscriber).filter_by(email=READERS["unsubscribe"]).one()
        assert una.unsubscribed_at is not None
        assert "unsubscribe address" in str(una.consent.get("unsubscribed", ""))

    # Only the auto-reply is still in the inbox; everything matched (and the ignored
    # "delivered" report) moved to .Processed.
    box = mailbox.Maildir(str(path), create=False)
    assert _subjects(box) == ["Automatic reply: The Test Review"]
    assert len(list((path / "new").iterdir())) + len(list((path / "cur").iterdir())) == 1
    processed = box.get_folder("Processed")
    assert (path / ".Processed").is_dir()
    assert _subjects(processed) == sorted([
        "Undelivered Mail Returned to Sender", "Delayed Mail (still being retried)",
        "Successful Mail Delivery Report", "Undeliverable: The Test Review",
        "FW: The Test Review", "unsubscribe"])

    # A second run finds only what was left, and changes nothing more.
    again = run_digest("bounces", "process", "--maildir", str(path), cwd=tmp_path,
                       env={"DIGEST_SECRET_KEY": SECRET})
    assert again.code == 0, again.err
    assert f"1 messages read from {path}; 1 left in place" in again.out.splitlines()
    assert _state(ctx) == state


def test_forged_tokens_are_not_matched_and_change_nothing(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    ids = _add(ctx, "ann@example.org", "bob@example.net")
    sent = _send(ctx, smtp_sink, _periods(ctx)[-1])
    ann, bob = sent["ann@example.org"], sent["bob@example.net"]
    edition_id = ann.edition_id
    wrong_mac = f"bounces+{edition_id}-{ids['bob@example.net']}-000000000000@news.example.org"
    # Ann's genuine MAC under Bob's id: a reader cannot bounce someone else.
    borrowed = ann.verp.replace(f"-{ids['ann@example.org']}-", f"-{ids['bob@example.net']}-")
    assert borrowed != ann.verp and tag_of(borrowed, BOUNCES) is not None
    unsub = ann.unsubscribe.replace(f"+{ids['ann@example.org']}-",
                                    f"+{ids['bob@example.net']}-")
    foreign_id = "<4f2a9b1c.77@mail.example.net>"  # the bounce quotes no message of ours
    path = _maildir(tmp_path / "Maildir", [
        _mail("hard-bounce", bob, VERP=wrong_mac, MESSAGE_ID=foreign_id),
        _mail("hard-bounce", bob, VERP=borrowed, MESSAGE_ID=foreign_id),
        _mail("abuse-report", bob, VERP=wrong_mac, MESSAGE_ID=foreign_id),
        _mail("unsubscribe-request", bob, UNSUB=unsub),
    ])
    before_state, before_deliveries = _state(ctx), _deliveries(ctx)

    ran = run_digest("bounces", "process", "--maildir", str(path), cwd=tmp_path,
                     env={"DIGEST_SECRET_KEY": SECRET})

    assert ran.code == 0, ran.err
    assert f"4 messages read from {path}; 4 left in place" in ran.out.splitlines()
    assert "unknown: 4" in ran.out.splitlines()
    assert len([line for line in ran.err.splitlines() if "left in place" in line]) == 4
    assert _state(ctx) == before_state
    assert _deliveries(ctx) == before_deliveries
    box = mailbox.Maildir(str(path), create=False)
    assert len(box) == 4
    assert len(box.get_folder("Processed")) == 0


def test_a_mailbox_that_is_not_a_maildir_is_one_clear_error(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path
) -> None:
    _context(make_context, feed_server, smtp_sink)
    (tmp_path / "plain").mkdir()
    ran = run_digest("bounces", "process", "--maildir", str(tmp_path / "plain"), cwd=tmp_path,
                     env={"DIGEST_SECRET_KEY": SECRET})
    assert ran.code == 1
    assert "is not a Maildir" in ran.err and "Traceback" not in ran.err


# -- soft bounces -----------------------------------------------------------------------------


def _soft(ctx: Context, copy: Copy, *, action: str = "delayed") -> None:
    """Read and act on a soft bounce (a DSN with status 4.2.2) of one delivery."""
    data = _mail("soft-bounce", copy).replace(b"Action: delayed", f"Action: {action}".encode())
    reading = Reader(ctx).read(data)
    assert reading.kind is Kind.SOFT, reading
    assert (reading.edition_id, reading.subscriber_id) == (copy.edition_id, copy.subscriber_id)
    assert "4.2.2" in reading.detail
    assert apply(ctx, reading, ctx.now())


def _editions(ctx: Context, sink: SmtpSink, count: int) -> list[dict[str, Copy]]:
    """Send ``count`` consecutive editions to every confirmed subscriber."""
    sent = [_send(ctx, sink, period) for period in _periods(ctx)[:count]]
    assert len({next(iter(copies.values())).edition_id for copies in sent}) == count
    return sent


def test_three_soft_bounces_on_consecutive_editions_suppress_the_reader(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org", "bob@example.net")
    first, second, third = _editions(ctx, smtp_sink, 3)
    _soft(ctx, first["ann@example.org"])
    _soft(ctx, second["ann@example.org"])
    assert _state(ctx)["ann@example.org"] == ("confirmed", 0, 2)
    # The third one is the MTA giving up on a temporary failure: still a soft bounce.
    _soft(ctx, third["ann@example.org"], action="failed")
    assert _state(ctx)["ann@example.org"] == ("bounced", 1, 3)
    assert _state(ctx)["bob@example.net"] == ("confirmed", 0, 0)
    # Soft bounces do not fail the deliveries: the messages were accepted.
    assert {status for status, _ in _deliveries(ctx).values()} == {"sent"}


def test_soft_bounces_with_a_good_edition_between_do_not_suppress(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org")
    sent = [copies["ann@example.org"] for copies in _editions(ctx, smtp_sink, 4)]
    _soft(ctx, sent[0])
    # sent[1] arrived: no bounce for it.
    _soft(ctx, sent[2])
    assert _state(ctx)["ann@example.org"] == ("confirmed", 0, 1)
    _soft(ctx, sent[3])
    assert _state(ctx)["ann@example.org"] == ("confirmed", 0, 2)


def test_the_same_edition_bounced_twice_counts_once(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org")
    sent = [copies["ann@example.org"] for copies in _editions(ctx, smtp_sink, 3)]
    _soft(ctx, sent[0])
    _soft(ctx, sent[0], action="failed")  # "delayed" first, then the MTA gave up
    _soft(ctx, sent[1])
    _soft(ctx, sent[1])
    assert _state(ctx)["ann@example.org"] == ("confirmed", 0, 2)
    _soft(ctx, sent[2])
    assert _state(ctx)["ann@example.org"] == ("bounced", 1, 3)


def test_a_late_second_report_of_an_earlier_edition_does_not_break_the_row(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org")
    sent = [copies["ann@example.org"] for copies in _editions(ctx, smtp_sink, 3)]
    _soft(ctx, sent[0])  # edition 1: "delayed"
    _soft(ctx, sent[1])  # edition 2: "delayed"
    _soft(ctx, sent[0], action="failed")  # edition 1 again, the MTA gave up: counts once
    _soft(ctx, sent[2])  # edition 3
    assert _state(ctx)["ann@example.org"] == ("bounced", 1, 3)


def test_soft_bounces_of_consecutive_editions_read_out_of_order_suppress(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org")
    sent = [copies["ann@example.org"] for copies in _editions(ctx, smtp_sink, 3)]
    for index in (1, 0, 2):
        _soft(ctx, sent[index])
    assert _status(ctx, "ann@example.org") == "bounced"


# -- what the next edition does -------------------------------------------------------------


def test_readers_suppressed_by_returned_mail_get_no_further_edition(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    ids = _add(ctx, "hana@example.org", "carl@example.net", "una@example.com",
               "keep@example.org")
    first_period, second_period = _periods(ctx)[-2:]
    first = _send(ctx, smtp_sink, first_period)
    assert set(first) == set(ids)
    path = _maildir(tmp_path / "Maildir", [
        _mail("hard-bounce", first["hana@example.org"]),
        _mail("abuse-report", first["carl@example.net"]),
        _mail("unsubscribe-request", first["una@example.com"]),
    ])
    report = process_maildir(ctx, path, ctx.now())
    assert report.unmatched == []
    assert report.counts == {Kind.HARD.value: 1, Kind.COMPLAINT.value: 1,
                             Kind.UNSUBSCRIBE.value: 1}
    assert {a: s[0] for a, s in _state(ctx).items()} == {
        "hana@example.org": "bounced", "carl@example.net": "complained",
        "una@example.com": "unsubscribed", "keep@example.org": "confirmed"}

    second = _send(ctx, smtp_sink, second_period)
    assert list(second) == ["keep@example.org"]
    second_id = second["keep@example.org"].edition_id
    assert second_id != first["keep@example.org"].edition_id
    with ctx.db.reader() as session:
        owed = session.query(Delivery).filter_by(edition_id=second_id).all()
        assert [(d.subscriber_id, d.status) for d in owed] == [(ids["keep@example.org"], "sent")]


def test_a_message_id_report_about_someone_not_sent_the_edition_is_not_acted_on(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink,
    tmp_path: Path
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink)
    _add(ctx, "ann@example.org")
    ann = _send(ctx, smtp_sink, _periods(ctx)[-1])["ann@example.org"]
    late = _add(ctx, "late@example.net")["late@example.net"]  # joined after the send
    nonce = ann.message_id.strip("<>").split(".")[0]
    forged = message_id(nonce, late, "news.example.org")
    reading = Reader(ctx).read(_mail("hard-bounce-message-id-only", ann, MESSAGE_ID=forged,
                                     RCPT="late@example.net"))
    if reading.kind is not Kind.UNKNOWN:
        apply(ctx, reading, ctx.now())
    assert _status(ctx, "late@example.net") == "confirmed"


def test_a_capitalised_bounce_address_still_matches_its_bounces(
    make_context: Callable[..., Context], feed_server: FeedServer, smtp_sink: SmtpSink
) -> None:
    ctx = _context(make_context, feed_server, smtp_sink,
                   extra='[bounces]\naddress = "Bounces@news.example.org"\n')
    _add(ctx, "ann@example.org")
    editions.send(ctx, _periods(ctx)[-1], SMTPTransport(ctx.settings.smtp), check_links=False)
    [item] = smtp_sink.received
    assert item.mail_from.startswith("Bounces+")
    # The bounce quotes no Message-ID of ours: only the VERP address can match it.
    data = _mail("hard-bounce", VERP=item.mail_from, MESSAGE_ID="<x@elsewhere.example>",
                 RCPT="ann@example.org")
    reading = Reader(ctx).read(data)
    assert reading.kind is Kind.HARD


# -- the same through a real IMAP server (Dovecot) ----------------------------------------

DOVECOT_CONF = """protocols = imap
listen = 127.0.0.1
base_dir = {run}
state_dir = {state}
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mail}/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
"""


@pytest.fixture
def imap_server(tmp_path: Path) -> Iterator[int]:
    """A real Dovecot IMAP server on a free loopback port, user bounces / imap-pw."""
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import time

    from digest.deliver.sink import free_port

    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                         if Path("/usr/sbin/dovecot").exists() else None)
    if binary is None:
        pytest.skip("Debian's dovecot-imapd is not installed "
                    "(tests/install-system-tools.sh installs it as root)")
    try:
        dovecot = pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        pytest.skip("the dovecot and dovenull users do not exist")
    if os.geteuid() != 0:
        pytest.skip("starting Dovecot for the test needs root")
    # Dovecot's own processes run as its users: its files live where they can reach them.
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
    os.chmod(root, 0o755)
    for name in ("run", "state", "mail"):
        (root / name).mkdir(parents=True)
    os.chown(root / "mail", dovecot.pw_uid, dovecot.pw_gid)
    (root / "passwd").write_text(
        f"bounces:{{PLAIN}}imap-pw:{dovecot.pw_uid}:{dovecot.pw_gid}::{root / 'mail'}\n")
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(run=root / "run", state=root / "state",
                                        log=root / "log", mail=root / "mail", port=port,
                                        passwd=root / "passwd"))
    server = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.skip("Dovecot did not start: " + (root / "log").read_text()[-500:]
                            if (root / "log").exists() else "Dovecot did not start")
            time.sleep(0.05)
    yield port
    server.terminate()
    server.wait(10)
    shutil.rmtree(root, ignore_errors=True)


def test_bounces_are_read_from_an_imap_folder(
    imap_server: int, make_context: Callable[..., Context], feed_server: FeedServer,
    smtp_sink: SmtpSink, tmp_path: Path,
) -> None:
    import imaplib

    table = (BOUNCES_TABLE + f'imap_host = "127.0.0.1"\nimap_port = {imap_server}\n'
             'imap_security = "none"\nimap_user = "bounces"\nimap_password_env = "IMAP_PW"\n')
    ctx = _context(make_context, feed_server, smtp_sink, extra=table)
    ids = _add(ctx, "hard@example.org", "angry@example.org", "fine@example.org")
    copies = _send(ctx, smtp_sink, _periods(ctx)[-1])
    client = imaplib.IMAP4("127.0.0.1", imap_server)
    client.login("bounces", "imap-pw")
    for data in (_mail("hard-bounce", copies["hard@example.org"]),
                 _mail("abuse-report", copies["angry@example.org"]),
                 _mail("out-of-office", copies["fine@example.org"])):
        client.append("INBOX", None, None, data)
    client.logout()

    ran = run_digest("bounces", "process", cwd=tmp_path,
                     env={"DIGEST_SECRET_KEY": SECRET, "IMAP_PW": "imap-pw"})
    assert ran.code == 0, ran.err
    assert "hard bounce: 1" in ran.out and "complaint: 1" in ran.out
    assert "left in place" in ran.err
    state = _state(ctx)
    assert state["hard@example.org"][0] == "bounced"
    assert state["angry@example.org"][0] == "complained"
    assert state["fine@example.org"][0] == "confirmed"
    assert ids

    client = imaplib.IMAP4("127.0.0.1", imap_server)
    client.login("bounces", "imap-pw")
    client.select("INBOX")
    _, inbox = client.uid("SEARCH", "ALL")
    client.select("Processed")
    _, processed = client.uid("SEARCH", "ALL")
    client.logout()
    assert len(inbox[0].split()) == 1  # the out-of-office reply, left where it was
    assert len(processed[0].split()) == 2

    wrong = run_digest("bounces", "process", cwd=tmp_path,
                       env={"DIGEST_SECRET_KEY": SECRET, "IMAP_PW": "nope"})
    assert wrong.code == 1 and "IMAP 127.0.0.1" in wrong.err and "Traceback" not in wrong.err
