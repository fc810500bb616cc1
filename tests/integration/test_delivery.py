"""Delivery that never skips a subscriber and never silently repeats one, against real
SMTP servers on loopback and the real `digest send` process."""

from __future__ import annotations

import collections
import email
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from digest import editions, operations, subscribers
from digest.app import Context
from digest.compose import weekly_period
from digest.deliver.sink import DROP, SmtpSink
from digest.deliver.smtp import SMTPTransport
from digest.demo import shifted_feed
from digest.errors import LockedError
from digest.gather.run import gather
from digest.models import Delivery, Subscriber
from digest.sample import SAMPLE_FEED
from tests.conftest import SECRET, FeedServer, Route, config_text, run_digest

ENV = {"DIGEST_SECRET_KEY": SECRET}
FAST_RETRY = "first_retry_seconds = 0.3\nretry_window_minutes = 0.5"


def _feed(feed_server: FeedServer) -> str:
    feed_server.routes["/feed"] = Route(shifted_feed(SAMPLE_FEED.read_bytes(), datetime.now(UTC)))
    return feed_server.url("/feed")


def _message_ids(sink: SmtpSink) -> dict[str, list[str]]:
    by_rcpt: dict[str, list[str]] = collections.defaultdict(list)
    for item in sink.received:
        msg = email.message_from_bytes(item.data, policy=policy.default)
        by_rcpt[item.recipients[0]].append(str(msg["Message-ID"]))
    return by_rcpt


def _project(tmp_path: Path, feed_server: FeedServer, port: int, people: int,
             smtp: str = "") -> Path:
    (tmp_path / "config.toml").write_text(config_text(
        feeds=[("Meridian", _feed(feed_server))], smtp_port=port, smtp=smtp))
    (tmp_path / "list.csv").write_text(
        "email\n" + "".join(f"reader{i:04d}@example.org\n" for i in range(people)))
    assert run_digest("gather", cwd=tmp_path).code == 0
    assert run_digest("subscribers", "import", "list.csv", cwd=tmp_path).code == 0
    return tmp_path


def _start_send(folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "send", "--skip-link-check"], cwd=folder,
        env={**_clean_env(), **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}


def _wait(predicate: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_mid_send_then_resume_serves_everyone_once(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    people = 300
    with SmtpSink(delay=0.01) as sink:
        folder = _project(tmp_path, feed_server, sink.port, people)
        first = _start_send(folder)
        _wait(lambda: len(sink.received) >= 60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = len(sink.received)
        assert at_kill < people, "the send finished before it could be killed"
        again = run_digest("send", "--skip-link-check", cwd=folder, env=ENV, timeout=120)
        assert again.code == 0, again.err
        by_rcpt = _message_ids(sink)
        assert set(by_rcpt) == {f"reader{i:04d}@example.org" for i in range(people)}
        duplicated = {r: ids for r, ids in by_rcpt.items() if len(ids) > 1}
        # Only messages sent but not yet recorded at the kill: at most 2 x max_connections.
        assert len(sink.received) - people == sum(len(i) - 1 for i in duplicated.values())
        assert len(duplicated) <= 2 * 2
        assert all(len(set(ids)) == 1 for ids in duplicated.values()), "same Message-ID"
        third = run_digest("send", "--skip-link-check", cwd=folder, env=ENV)
        assert third.code == 0 and "already sent" in third.out
        assert len(_message_ids(sink)) == people and len(sink.received) == people + sum(
            len(i) - 1 for i in duplicated.values())


@pytest.mark.slow
def test_a_second_send_at_once_refuses_and_the_lock_dies_with_its_process(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    with SmtpSink(delay=0.02) as sink:
        folder = _project(tmp_path, feed_server, sink.port, 150)
        first = _start_send(folder)
        _wait(lambda: len(sink.received) >= 5)
        second = run_digest("send", "--skip-link-check", cwd=folder, env=ENV)
        assert second.code == 1
        assert "another `digest send` is already running" in second.err
        assert "Traceback" not in second.err
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # The kill released the lock: the next send runs at once and completes.
        third = run_digest("send", "--skip-link-check", cwd=folder, env=ENV, timeout=120)
        assert third.code == 0, third.err
        assert len(_message_ids(sink)) == 150


def test_sigterm_finishes_the_batch_in_flight_and_exits_cleanly(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    with SmtpSink(delay=0.02) as sink:
        folder = _project(tmp_path, feed_server, sink.port, 120)
        first = _start_send(folder)
        _wait(lambda: len(sink.received) >= 10)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
        assert first.returncode == 3, err  # stopped with deliveries still owed
        sent_before = len(sink.received)
        assert sent_before < 120
        rest = run_digest("send", "--skip-link-check", cwd=folder, env=ENV, timeout=120)
        assert rest.code == 0, rest.err
        by_rcpt = _message_ids(sink)
        assert len(by_rcpt) == 120 and len(sink.received) == 120  # a clean stop: no duplicate


@pytest.fixture
def ready(make_context: Callable[..., Context], feed_server: FeedServer
          ) -> Callable[..., Context]:
    def make(port: int, people: int = 6, smtp: str = FAST_RETRY) -> Context:
        ctx = make_context(feeds=[("Meridian", _feed(feed_server))], smtp_port=port, smtp=smtp)
        gather(ctx.settings, ctx.db)
        for i in range(people):
            subscribers.add(ctx.db, f"p{i}@example.org", now=ctx.now())
        return ctx

    return make


def _send(ctx: Context) -> editions.SendOutcome:
    period = weekly_period(ctx.now(), ctx.settings.timezone, ctx.settings.digest.window_days)
    return editions.send(ctx, period, SMTPTransport(ctx.settings.smtp), check_links=False)


def test_451_is_retried_and_delivered_in_the_same_run(ready: Callable[..., Context]) -> None:
    tries: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def greylist(envelope: object) -> str | None:
        rcpt = envelope.rcpt_tos[0]  # type: ignore[attr-defined]
        with lock:
            tries[rcpt] += 1
            return "451 4.7.1 Greylisted, try again later" if tries[rcpt] == 1 and (
                rcpt in ("p1@example.org", "p4@example.org")) else None

    with SmtpSink(data_reply=greylist) as sink:
        ctx = ready(sink.port)
        outcome = _send(ctx)
        assert outcome.state == editions.SendState.COMPLETE
        assert outcome.run is not None and outcome.run.deferred == 2 and outcome.run.sent == 6
        assert sorted(r.recipients[0] for r in sink.received) == sorted(
            f"p{i}@example.org" for i in range(6))
    with ctx.db.reader() as session:
        attempts = {s.email: d.attempts for d, s in session.query(Delivery, Subscriber)
                    .join(Subscriber, Subscriber.id == Delivery.subscriber_id)}
        assert {d.status for d in session.query(Delivery)} == {"sent"}
    assert attempts == {f"p{i}@example.org": 2 if i in (1, 4) else 1 for i in range(6)}
    assert tries["p1@example.org"] == 2


def test_deferred_past_the_retry_window_is_left_for_the_next_run(
    ready: Callable[..., Context]
) -> None:
    def always_busy(envelope: object) -> str | None:
        rcpt = envelope.rcpt_tos[0]  # type: ignore[attr-defined]
        return "452 4.2.2 Mailbox full" if rcpt == "p0@example.org" else None

    with SmtpSink(data_reply=always_busy) as sink:
        ctx = ready(sink.port, smtp="first_retry_seconds = 30\nretry_window_minutes = 0.01")
        outcome = _send(ctx)
        assert outcome.state == editions.SendState.INCOMPLETE
        assert outcome.counts["deferred"] == 1 and outcome.counts["sent"] == 5
        assert len(sink.received) == 5


def test_a_dropped_connection_defers_and_the_pool_reconnects(
    ready: Callable[..., Context]
) -> None:
    seen = {"n": 0}
    lock = threading.Lock()

    def drop_third(envelope: object) -> str | None:
        with lock:
            seen["n"] += 1
            return DROP if seen["n"] == 3 else None

    with SmtpSink(data_reply=drop_third) as sink:
        ctx = ready(sink.port)
        outcome = _send(ctx)
        assert outcome.state == editions.SendState.COMPLETE
        assert outcome.run is not None and outcome.run.deferred == 1
        assert len(_message_ids(sink)) == 6 and len(sink.received) == 6


def test_pause_resume_cancel_and_retry(ready: Callable[..., Context]) -> None:
    refuse = {"p2@example.org": "550 5.1.1 unknown"}
    with SmtpSink(rcpt_reply=refuse.get) as sink:
        ctx = ready(sink.port)
        outcome = _send(ctx)
        edition_id = outcome.edition_id
        assert edition_id is not None and outcome.counts["failed"] == 1
        with pytest.raises(Exception, match="only an edition that is sending"):
            operations.pause(ctx, edition_id)
        refuse.clear()  # the operator fixed what made the server refuse
        assert operations.retry(ctx, edition_id) == 1
        again = editions.deliver_edition(ctx, edition_id, SMTPTransport(ctx.settings.smtp))
        assert again.state == editions.SendState.COMPLETE and again.counts["failed"] == 0
        assert [r.recipients[0] for r in sink.received].count("p2@example.org") == 1
        listed = operations.list_editions(ctx)
        assert listed[0].counts["sent"] == 6 and listed[0].status == "sent"
        detail = operations.show(ctx, edition_id)
        assert detail.articles and detail.articles[0][2]  # the lead comes first


def _enqueued(ctx: Context) -> tuple[object, int]:
    """This week's edition stored and enqueued, nothing sent yet: (period, edition id)."""
    from digest.models import EditionStatus
    from digest.queries import deliveries as dq
    from digest.queries import editions as eq

    period = weekly_period(ctx.now(), ctx.settings.timezone, 7)
    prepared = editions.prepare(ctx, period)
    assert prepared is not None
    with ctx.db.session() as session:
        row = eq.create_edition(session, prepared.plan, prepared.rendered, now=ctx.now(),
                                status=EditionStatus.SENDING)
        dq.enqueue(session, row.id, ctx.now())
        return period, row.id


def test_a_claim_reads_only_its_batch_from_the_index(ready: Callable[..., Context]) -> None:
    """Every query a claim makes on the ledger is a range scan of an index: a plan that
    scans or sorts the edition's rows costs a full pass over a million rows per batch."""
    from sqlalchemy import event

    from digest.queries import deliveries as dq

    ctx = ready(1)
    _, edition_id = _enqueued(ctx)
    issued: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object,
             context: object, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "deliveries" in statement:
            issued.append((statement, parameters))

    event.listen(ctx.db.engine, "before_cursor_execute", keep)
    try:
        with ctx.db.session() as session:
            assert len(dq.claim(session, edition_id, "me", 3, ctx.now())) == 3
            assert dq.has_due(session, edition_id, ctx.now())
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", keep)
    assert issued
    with ctx.db.engine.connect() as conn:
        for statement, parameters in issued:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters))  # type: ignore[arg-type]
            assert "SCAN deliveries" not in plan and "TEMP B-TREE" not in plan, (statement, plan)


def test_a_paused_edition_is_not_sent_until_resumed(ready: Callable[..., Context]) -> None:
    with SmtpSink() as sink:
        ctx = ready(sink.port)
        period, edition_id = _enqueued(ctx)
        operations.pause(ctx, edition_id)
        paused = editions.send(ctx, period, SMTPTransport(ctx.settings.smtp))
        assert paused.state == editions.SendState.NOT_SENDABLE and paused.status == "paused"
        assert sink.received == []
        operations.resume(ctx, edition_id)
        done = editions.deliver_edition(ctx, edition_id, SMTPTransport(ctx.settings.smtp))
        assert done.state == editions.SendState.COMPLETE and len(sink.received) == 6
        with pytest.raises(Exception, match="sent"):
            operations.cancel(ctx, edition_id)


def test_cancel_suppresses_what_is_still_owed(ready: Callable[..., Context]) -> None:
    with SmtpSink() as sink:
        ctx = ready(sink.port)
        period, edition_id = _enqueued(ctx)
        operations.cancel(ctx, edition_id)
        outcome = editions.send(ctx, period, SMTPTransport(ctx.settings.smtp))
        assert outcome.state == editions.SendState.NOT_SENDABLE
        assert outcome.counts["suppressed"] == 6 and sink.received == []


def test_two_sends_in_one_process_are_refused_too(ready: Callable[..., Context]) -> None:
    from digest.locks import send_lock

    with SmtpSink() as sink:
        ctx = ready(sink.port)
        with send_lock(ctx.db), pytest.raises(LockedError, match="already running"):
            _send(ctx)


def test_send_json_report(tmp_path: Path, feed_server: FeedServer) -> None:
    with SmtpSink() as sink:
        folder = _project(tmp_path, feed_server, sink.port, 3)
        ran = run_digest("send", "--skip-link-check", "--json", cwd=folder, env=ENV)
        assert ran.code == 0, ran.err
        report = json.loads(ran.out)
        assert report["state"] == "complete" and report["sent"] == 3
        assert report["counts"]["sent"] == 3
        listed = run_digest("editions", "list", "--json", cwd=folder)
        edition = json.loads(listed.out.splitlines()[0])
        assert edition["status"] == "sent" and edition["counts"]["sent"] == 3
        shown = run_digest("editions", "show", str(edition["id"]), cwd=folder)
        assert shown.code == 0 and "LEAD" in shown.out
        missing = run_digest("editions", "pause", "999", cwd=folder)
        assert missing.code == 1 and "there is no edition 999" in missing.err


# -- TLS and AUTH against a real server ------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no test certificate can be made")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def _auth(wanted: tuple[str, str]) -> Callable[..., object]:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticate(server: object, session: object, envelope: object, mechanism: str,
                     data: object) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (
            data.login.decode(), data.password.decode()) == wanted
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    return authenticate


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_auth_with_the_password_from_the_environment(
    security: str, certificate: tuple[Path, Path], make_context: Callable[..., Context],
    feed_server: FeedServer,
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    # aiosmtpd does not count implicit TLS as TLS for AUTH, so only STARTTLS requires it.
    options = ({"tls_context": server_tls, "require_starttls": True, "auth_require_tls": True}
               if security == "starttls"
               else {"ssl_context": server_tls, "auth_require_tls": False})
    with SmtpSink(authenticator=_auth(("digest", "s3cret")), **options) as sink:
        smtp = (f'security = "{security}"\nusername = "digest"\npassword_env = "SMTP_PW"\n'
                f'ca_file = "{cert}"')
        ctx = make_context(feeds=[("M", _feed(feed_server))], smtp_port=sink.port, smtp=smtp)
        gather(ctx.settings, ctx.db)
        subscribers.add(ctx.db, "t@example.org", now=ctx.now())
        settings = ctx.settings.with_environ({**ctx.settings.environ, "SMTP_PW": "s3cret"})
        transport = SMTPTransport(settings.smtp, settings.smtp_password())
        period = weekly_period(ctx.now(), settings.timezone, 7)
        outcome = editions.send(ctx, period, transport, check_links=False)
        assert outcome.state == editions.SendState.COMPLETE
        assert [r.recipients for r in sink.received] == [("t@example.org",)]
        wrong = SMTPTransport(settings.smtp, "wrong")
        with pytest.raises(Exception, match="refused the login"):
            wrong.check()


def test_an_error_building_one_message_defers_it_and_the_run_ends() -> None:
    from datetime import timedelta

    from digest.deliver.run import Job, deliver
    from digest.deliver.smtp import MemoryTransport
    from digest.editions import _MemoryLedger

    jobs = [Job(i, i, f"r{i}@example.org", f"r{i}@example.org", None, 1) for i in range(1, 6)]

    def build(job: Job, when: datetime) -> object:
        if job.delivery_id == 3:
            raise ValueError("something unexpected")
        from digest.deliver.message import OutgoingMessage

        return OutgoingMessage("a@b.c", job.email, b"Subject: x\r\n\r\nx\r\n", "<x@y>")

    ledger = _MemoryLedger(jobs)
    transport = MemoryTransport()
    done = threading.Event()
    report: list[object] = []

    def run() -> None:
        report.append(deliver(ledger, transport, build, retry_window=timedelta(0)))  # type: ignore[arg-type]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(20), "the run hung on a failing message"
    result = report[0]
    assert result.sent == 4 and result.deferred == 1  # type: ignore[attr-defined]
    deferred = [r for r in ledger.results if r.status == "deferred"]
    assert "internal error: ValueError" in (deferred[0].reply or "")


@pytest.mark.parametrize("smtputf8", [True, False])
def test_a_non_ascii_address(ready: Callable[..., Context], smtputf8: bool) -> None:
    with SmtpSink(enable_SMTPUTF8=smtputf8) as sink:
        ctx = ready(sink.port, people=1)
        subscribers.add(ctx.db, "josé@example.org", now=ctx.now())
        outcome = _send(ctx)
        assert outcome.state == editions.SendState.COMPLETE
        got = sorted(r.recipients[0] for r in sink.received)
        if smtputf8:
            assert got == ["josé@example.org", "p0@example.org"]
        else:
            assert got == ["p0@example.org"]
            assert outcome.counts["failed"] == 1
            assert "SMTPUTF8" in outcome.run.failures[0][1]  # type: ignore[union-attr]
            with ctx.db.reader() as session:
                jose = session.query(Subscriber).filter_by(email="josé@example.org").one()
                assert jose.status == "confirmed"  # not the reader's fault: not bounced


def test_cancel_while_sending_keeps_the_edition_cancelled(ready: Callable[..., Context]) -> None:
    from digest.models import EditionStatus
    from digest.queries import deliveries as dq
    from digest.queries import editions as eq

    with SmtpSink() as sink:
        ctx = ready(sink.port)
        _, edition_id = _enqueued(ctx)
        ledger = dq.SqlLedger(ctx.db, edition_id, "me")
        in_flight = ledger.claim(2, ctx.now())  # two messages on the wire
        operations.cancel(ctx, edition_id)
        from digest.deliver.run import Result
        from digest.models import DeliveryStatus

        ledger.record([Result(j.delivery_id, j.subscriber_id, DeliveryStatus.SENT, "250 ok")
                       for j in in_flight], ctx.now())
        assert not ledger.finish_if_complete(ctx.now())
        with ctx.db.reader() as session:
            assert eq.get(session, edition_id).status == EditionStatus.CANCELLED  # type: ignore[union-attr]
            counts = dq.counts(session, edition_id)
        assert counts["sent"] == 2 and counts["suppressed"] == 4
        assert sink.received == []


def test_names_never_break_a_header(ready: Callable[..., Context]) -> None:
    with SmtpSink() as sink:
        ctx = ready(sink.port, people=0)
        subscribers.add(ctx.db, "n@example.org", name="Eve\r\nBcc: x@evil.example\n\nbody",
                        now=ctx.now())
        _send(ctx)
        msg = email.message_from_bytes(sink.received[0].data, policy=policy.default)
        assert msg["To"].addresses[0].display_name == "Eve Bcc: x@evil.example body"
        assert msg["Bcc"] is None
