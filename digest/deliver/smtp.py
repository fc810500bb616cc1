"""Transports: the SMTP connection pool, and an in-memory one for --dry-run and tests.

A transport takes an OutgoingMessage and says what the server said, as a
SendResult; it never touches the ledger. ``send`` is safe to call from several
threads: each call borrows one pooled connection.
"""

from __future__ import annotations

import contextlib
import queue
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ..config import SmtpConfig
from ..errors import DeliveryError
from .message import OutgoingMessage


class Outcome(StrEnum):
    """How the server took one message."""

    SENT = "sent"  # accepted (2xx)
    TEMPORARY = "temporary"  # try again later (4xx, connection trouble)
    PERMANENT = "permanent"  # never try again (5xx)


@dataclass(frozen=True)
class SendResult:
    """The server's answer to one message."""

    outcome: Outcome
    code: int | None
    reply: str
    stage: str  # connect, mail, rcpt, data

    @property
    def summary(self) -> str:
        """One line for the ledger: ``550 at rcpt: no such user``."""
        code = f"{self.code} " if self.code is not None else ""
        return f"{code}at {self.stage}: {self.reply}"[:500]


def _classify(code: int, reply: bytes | str, stage: str) -> SendResult:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = " ".join(text.split())
    if 200 <= code < 300:
        return SendResult(Outcome.SENT, code, text, stage)
    if 400 <= code < 500 or code < 200:
        return SendResult(Outcome.TEMPORARY, code, text, stage)
    return SendResult(Outcome.PERMANENT, code, text, stage)


class Pacer(Protocol):
    """Something that makes a sender wait for its turn (see RateLimiter, pacing)."""

    def wait(self) -> None:
        """Block until the next send is allowed."""


class RateLimiter:
    """Spaces out sends so the whole run stays under ``per_second`` (0: no limit)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next send is allowed."""
        if not self.interval:
            return
        with self._lock:
            now = self.clock()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


THROTTLING_REPLIES = frozenset({421, 451, 452, 454})


class Throttle:
    """Adaptive backoff for the whole pool: a throttling reply (421, 451, 452, 454) pauses
    every connection, for 1 s and then doubling up to a minute while they keep coming;
    accepted messages halve the pause again."""

    def __init__(self, first: float = 1.0, longest: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.first, self.longest, self.clock, self.sleep = first, longest, clock, sleep
        self.delay = 0.0
        self.paused_until = 0.0
        self.hits = 0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block while the pool is paused."""
        with self._lock:
            pause = self.paused_until - self.clock()
        if pause > 0:
            self.sleep(pause)

    def hit(self) -> None:
        """The server asked us to slow down."""
        with self._lock:
            self.hits += 1
            self.delay = self.first if self.delay < self.first else min(self.delay * 2,
                                                                          self.longest)
            self.paused_until = max(self.paused_until, self.clock() + self.delay)

    def ok(self) -> None:
        """A message went through."""
        with self._lock:
            if self.delay:
                self.delay = self.delay / 2 if self.delay / 2 >= self.first else 0.0


class SMTPTransport:
    """A pool of up to ``max_connections`` SMTP connections, reused across messages."""

    def __init__(self, cfg: SmtpConfig, password: str | None = None, *,
                 limiter: Pacer | None = None) -> None:
        self.cfg = cfg
        self._password = password
        self.concurrency = cfg.max_connections
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._limiter: Pacer = limiter or RateLimiter(cfg.rate_per_second)
        self.throttle = Throttle()
        self._closed = False

    @property
    def where(self) -> str:
        """host:port, for messages."""
        return f"{self.cfg.host}:{self.cfg.port}"

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        context = ssl.create_default_context(
            cafile=str(cfg.ca_file) if cfg.ca_file else None)
        conn: smtplib.SMTP
        if cfg.security == "ssl":
            conn = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=context)
        else:
            conn = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            conn.ehlo_or_helo_if_needed()
            if cfg.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if cfg.username:
                _login(conn, cfg.username, self._password or "")
        except BaseException:
            _quietly_close(conn)
            raise
        return conn

    def check(self) -> None:
        """Connect once (and log in) so an unreachable or misconfigured server fails early."""
        try:
            conn = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP server {self.where} refused the login for {self.cfg.username!r}: "
                f"{_describe(exc)}",
                hint="check [smtp] username and the password variable named by password_env",
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot connect to SMTP server {self.where}: {_describe(exc)}",
                hint="check [smtp] host, port and security in config.toml, and that the "
                "server is running",
            ) from None
        self._idle.put(conn)

    def send(self, message: OutgoingMessage) -> SendResult:
        """Hand one message to the server over a pooled connection."""
        self.throttle.wait()
        self._limiter.wait()
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect()
            except smtplib.SMTPConnectError as exc:
                result = _classify(exc.smtp_code, exc.smtp_error, "connect")
                if exc.smtp_code in THROTTLING_REPLIES:
                    self.throttle.hit()
                return SendResult(Outcome.TEMPORARY, result.code, result.reply, "connect")
            except (OSError, smtplib.SMTPException) as exc:
                return SendResult(Outcome.TEMPORARY, None, _describe(exc), "connect")
        result, reusable = self._transact(conn, message)
        if result.code in THROTTLING_REPLIES:
            self.throttle.hit()
        elif result.outcome is Outcome.SENT:
            self.throttle.ok()
        if reusable and not self._closed:
            self._idle.put(conn)
        else:
            _quietly_close(conn)
        return result

    def _transact(self, conn: smtplib.SMTP, message: OutgoingMessage) -> tuple[SendResult, bool]:
        if _can_pipeline(conn, message):
            return self._pipelined(conn, message)
        options: list[str] = []
        if not (message.mail_from + message.recipient).isascii():
            if not conn.has_extn("smtputf8"):
                return SendResult(Outcome.PERMANENT, None, "the address is not ASCII and the "
                                  "server does not offer SMTPUTF8", "address"), True
            options = ["SMTPUTF8"]
        stage = "mail"
        try:
            code, reply = conn.mail(message.mail_from, options)
            if code != 250:
                return self._abort(conn, _classify(code, reply, stage))
            stage = "rcpt"
            code, reply = conn.rcpt(message.recipient)
            if code not in (250, 251):
                return self._abort(conn, _classify(code, reply, stage))
            stage = "data"
            code, reply = _data(conn, message.data)
            result = _classify(code, reply, stage)
            return result, code != 421
        except smtplib.SMTPServerDisconnected as exc:
            return SendResult(Outcome.TEMPORARY, None, f"connection lost: {exc}", stage), False
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            return SendResult(Outcome.TEMPORARY, None, _describe(exc), stage), False

    def _pipelined(self, conn: smtplib.SMTP, message: OutgoingMessage
                   ) -> tuple[SendResult, bool]:
        """MAIL, RCPT and DATA in one write, their three replies read together (RFC 2920):
        two round trips a message instead of four."""
        stage = "mail"
        try:
            conn.send(f"MAIL FROM:<{message.mail_from}>\r\nRCPT TO:<{message.recipient}>\r\n"
                      "DATA\r\n".encode("ascii"))
            mail, rcpt, data = conn.getreply(), conn.getreply(), conn.getreply()
            if mail[0] != 250:
                return self._abort(conn, _classify(*mail, stage))
            stage = "rcpt"
            if rcpt[0] not in (250, 251):
                return self._abort(conn, _classify(*rcpt, stage))
            stage = "data"
            if data[0] != 354:
                return self._abort(conn, _classify(*data, stage))
            conn.send(message.data + b".\r\n")
            code, reply = conn.getreply()
            return _classify(code, reply, stage), code != 421
        except smtplib.SMTPServerDisconnected as exc:
            return SendResult(Outcome.TEMPORARY, None, f"connection lost: {exc}", stage), False
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(Outcome.TEMPORARY, None, _describe(exc), stage), False

    @staticmethod
    def _abort(conn: smtplib.SMTP, result: SendResult) -> tuple[SendResult, bool]:
        if result.code == 421:
            return result, False
        try:
            conn.rset()
        except (OSError, smtplib.SMTPException):
            return result, False
        return result, True

    def close(self) -> None:
        """Say QUIT on every idle connection."""
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                _quietly_close(conn)


def _can_pipeline(conn: smtplib.SMTP, message: OutgoingMessage) -> bool:
    """Whether this message can go pipelined: the server offers it, the addresses are plain
    ASCII, and the bytes need no SMTP rewriting (see message.qp_encode)."""
    return (conn.has_extn("pipelining") and message.mail_from.isascii()
            and message.recipient.isascii() and message.data.endswith(b"\r\n")
            and b"\n." not in message.data and "\n" not in message.mail_from + message.recipient)


def _login(conn: smtplib.SMTP, user: str, password: str) -> None:
    """Log in with one mechanism (PLAIN, else LOGIN, else smtplib's choice): trying the
    next mechanism after a refused password only delays the error, and some servers hang."""
    advertised = (conn.esmtp_features.get("auth") or "").upper().split()
    conn.user, conn.password = user, password
    for mechanism, answer in (("PLAIN", conn.auth_plain), ("LOGIN", conn.auth_login)):
        if mechanism in advertised:
            conn.auth(mechanism, answer, initial_response_ok=mechanism == "PLAIN")
            return
    conn.login(user, password)


def _data(conn: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """DATA without smtplib's per-message regex passes: our bytes already use CRLF and
    never start a line with a dot (see message.qp_encode), so they are sent as they are."""
    if b"\n." in data or not data.endswith(b"\r\n"):
        return conn.data(data)
    conn.putcmd("data")
    code, reply = conn.getreply()
    if code != 354:
        return code, reply
    conn.send(data + b".\r\n")
    return conn.getreply()


def _quietly_close(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        error: bytes | str = exc.smtp_error
        text = error.decode("utf-8", "replace") if isinstance(error, bytes) else error
        return f"{exc.smtp_code} {text}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return str(exc) or type(exc).__name__


@dataclass
class MemoryTransport:
    """Keeps messages in a list instead of sending them (--dry-run, tests).

    ``answer`` may decide per message what the "server" says; by default all are accepted.
    """

    answer: Callable[[OutgoingMessage], SendResult] | None = None
    concurrency: int = 1
    keep: bool = True  # False: only count (dry runs of large lists)
    sent: list[OutgoingMessage] = field(default_factory=list)
    count: int = 0
    bytes: int = 0
    where: str = "memory"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def check(self) -> None:
        """Always reachable."""

    def send(self, message: OutgoingMessage) -> SendResult:
        """Record the message and answer for the server."""
        result = (
            self.answer(message)
            if self.answer
            else SendResult(Outcome.SENT, 250, "OK (kept in memory)", "data")
        )
        if result.outcome is Outcome.SENT:
            with self._lock:
                self.count += 1
                self.bytes += len(message.data)
                if self.keep:
                    self.sent.append(message)
        return result

    def close(self) -> None:
        """Nothing to close."""
