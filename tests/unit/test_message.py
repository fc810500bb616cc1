"""Rendered edition → one MIME message per recipient, by substitution."""

from __future__ import annotations

import email
import quopri
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.config import Publication
from digest.deliver.message import MessageTemplate, Recipient, message_id, qp_encode
from digest.domain import Personal, RenderedEdition

PUB = Publication("The Test Review", "https://news.example.org/", "digest@news.example.org",
                  "1 Test Street", reply_to="editors@news.example.org")
NONCE = "0123456789abcdef"
MARK = Personal.markers(NONCE)


def _rendered() -> RenderedEdition:
    html = (
        "<!doctype html><html lang=\"en\"><body><p>Caf\u00e9 &amp; more. "
        + "x" * 200
        + f'</p><a href="{MARK.unsubscribe_url}">Unsubscribe</a>'
        f'<a href="{MARK.preferences_url}">Prefs</a><p>Sent to {MARK.email}.</p>\n'
        ".starts with a dot\n</body></html>"
    )
    text = (f"Caf\u00e9 — weekly\n\nUnsubscribe: {MARK.unsubscribe_url}\n"
            f"Sent to {MARK.email}\n.dot line\n  trailing space   \n")
    return RenderedEdition(subject="The Test Review: Caf\u00e9 \u2014 a long subject line that "
                           "needs folding because it is long", preheader="", html=html, text=text,
                           mjml="", nonce=NONCE)


def _recipient(email_addr: str = "Ann.Lee@example.org", name: str | None = "Ann Lée") -> Recipient:
    return Recipient(
        email=email_addr, name=name,
        personal=Personal(email_addr, "https://news.example.org/unsubscribe/TOK.abc-_" + "z" * 90,
                          "https://news.example.org/preferences/TOK2"),
        message_id=message_id(NONCE, 42, PUB.domain),
    )


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


WHEN = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def test_message_is_multipart_alternative_text_then_html() -> None:
    msg = _parse(MessageTemplate(_rendered(), PUB).build(_recipient(), date=WHEN).data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_headers() -> None:
    msg = _parse(MessageTemplate(_rendered(), PUB).build(_recipient(), date=WHEN).data)
    assert msg["From"] == "The Test Review <digest@news.example.org>"
    assert msg["To"] == "Ann Lée <Ann.Lee@example.org>"
    assert msg["Reply-To"] == "editors@news.example.org"
    assert msg["Subject"].startswith("The Test Review: Café — a long subject")
    assert msg["Date"] == "Mon, 30 Nov 2026 07:00:00 +0000"
    assert re.fullmatch(r"<0123456789abcdef\.42\.[0-9a-f]{10}@news\.example\.org>",
                        msg["Message-ID"])
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Unsubscribe"] == f"<{_recipient().personal.unsubscribe_url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "news.example.org>" in msg["List-Id"]


def test_personal_values_are_substituted_in_both_parts() -> None:
    rec = _recipient("o'brien&co@example.org", None)
    msg = _parse(MessageTemplate(_rendered(), PUB).build(rec, date=WHEN).data)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert rec.personal.unsubscribe_url in text and rec.personal.unsubscribe_url in html
    assert "Sent to o'brien&co@example.org" in text
    assert "Sent to o&#x27;brien&amp;co@example.org." in html
    assert "%%digest" not in text and "%%digest" not in html
    assert "Café — weekly" in text and ".dot line" in text and ".starts with a dot" in html


def test_wire_format_needs_no_smtp_rewriting() -> None:
    data = MessageTemplate(_rendered(), PUB).build(_recipient(), date=WHEN).data
    assert b"\r\n." not in data  # no line starts with a dot: no dot-stuffing needed
    assert b"\n" not in data.replace(b"\r\n", b"")  # only CRLF line ends
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    body = data.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n") if not line.startswith(b"--"))


def test_each_recipient_differs_only_in_personal_parts() -> None:
    template = MessageTemplate(_rendered(), PUB)
    a = template.build(_recipient("a@example.org"), date=WHEN).data
    b = template.build(_recipient("b@example.org"), date=WHEN).data
    assert a != b
    assert a.replace(b"a@example.org", b"b@example.org") == b


def test_message_id_is_stable_per_edition_and_subscriber() -> None:
    assert message_id(NONCE, 7, "x.org") == message_id(NONCE, 7, "x.org")
    assert message_id(NONCE, 7, "x.org") != message_id(NONCE, 8, "x.org")
    assert message_id(NONCE, 7, "x.org") != message_id("fedcba9876543210", 7, "x.org")


def test_test_subject_override() -> None:
    data = MessageTemplate(_rendered(), PUB, subject="[TEST] hello").build(
        _recipient(), date=WHEN).data
    assert _parse(data)["Subject"] == "[TEST] hello"


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_quoted_printable_round_trips(text: str) -> None:
    encoded = qp_encode(text)
    lines = encoded.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert not any(line.startswith(b".") for line in lines)
    assert all(not line.endswith((b" ", b"\t")) for line in lines)
    expected = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    assert quopri.decodestring(encoded).decode("utf-8") == expected


def test_return_path_and_mailto_unsubscribe() -> None:
    rec = Recipient("a@example.org", None, _recipient().personal, "<x@y>",
                    return_path="bounces+1-2-abc@news.example.org",
                    unsubscribe_mailto="unsubscribe+2-def@news.example.org")
    out = MessageTemplate(_rendered(), PUB).build(rec, date=WHEN)
    assert out.mail_from == "bounces+1-2-abc@news.example.org"
    header = _parse(out.data)["List-Unsubscribe"]
    assert header == (f"<{rec.personal.unsubscribe_url}>, "
                      "<mailto:unsubscribe+2-def@news.example.org?subject=unsubscribe>")
