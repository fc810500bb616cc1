"""A built-in SMTP sink (aiosmtpd on a loopback port) that keeps one .eml file per message.

The demo sends to it; the tests use it as a real SMTP server. It can also answer
chosen recipients with a chosen reply, to play a server that defers or refuses.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One message as the sink received it."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    path: Path | None
    at: float = 0.0  # time.monotonic() when it was accepted


DROP = "DROP"  # a data_reply that closes the connection instead of answering


@dataclass
class _Handler:
    folder: Path | None
    rcpt_reply: Callable[[str], str | None] | None = None
    data_reply: Callable[[Envelope], str | None] | None = None
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_reply(address) if self.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.data_reply(envelope) if self.data_reply else None
        if reply == DROP and server.transport is not None:
            server.transport.close()
            return "421 closing"
        if reply:
            return reply
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and envelope.content:
            data = envelope.content
        with self.lock:
            path = None
            if self.folder is not None:
                path = self.folder / f"{len(self.received) + 1:04d}.eml"
                path.write_bytes(data)
            self.received.append(Received(
                mail_from=str(envelope.mail_from), recipients=tuple(envelope.rcpt_tos),
                data=data, path=path, at=time.monotonic(),
            ))
        return "250 Message accepted"


class SmtpSink:
    """An SMTP server on 127.0.0.1 that stores what it receives (``with SmtpSink(...) as s``)."""

    def __init__(
        self,
        folder: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        rcpt_reply: Callable[[str], str | None] | None = None,
        data_reply: Callable[[Envelope], str | None] | None = None,
        delay: float = 0.0,
        **smtp_options: Any,
    ) -> None:
        """``rcpt_reply``/``data_reply`` may answer for the server (a 4xx or 5xx line, or
        DROP to cut the connection); ``delay`` slows every message down; other keyword
        arguments go to aiosmtpd (TLS contexts, an authenticator)."""
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.handler = _Handler(folder, rcpt_reply, data_reply, delay)
        self._controller = Controller(self.handler, hostname=host, port=self.port,
                                      data_size_limit=50 * 1024 * 1024, **smtp_options)

    @property
    def received(self) -> list[Received]:
        """Every message received so far, in order."""
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> SmtpSink:
        """Start serving in a background thread."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
