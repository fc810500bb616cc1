"""DKIM signing of edition messages (dkimpy, relaxed/relaxed) and the [dkim] table."""

from __future__ import annotations

import email
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import dkim
import pytest
from dkim import dknewkey

from digest.app import Context
from digest.config import DkimConfig, Publication, load_config
from digest.deliver.message import DkimSigner, MessageTemplate, Recipient, message_id
from digest.domain import Personal, RenderedEdition
from digest.errors import ConfigError

PUB = Publication("The Test Review", "https://news.example.org/", "digest@news.example.org",
                  "1 Test Street", reply_to="editors@news.example.org")
DOMAIN = "news.example.org"
SELECTOR = "digest2026"
NONCE = "0123456789abcdef"
MARK = Personal.markers(NONCE)
WHEN = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
REQUIRED_SIGNED = {"from", "to", "subject", "date", "message-id", "mime-version",
                   "content-type", "list-unsubscribe", "list-unsubscribe-post"}


@dataclass(frozen=True)
class KeyPair:
    """A fresh RSA key: the PEM file and the DNS TXT record that publishes it."""

    path: Path
    pem: bytes
    record: bytes


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A 2048-bit RSA key made with dkimpy's own key tool (which runs openssl)."""
    if not os.access(dknewkey.OPENSSL_BINARY, os.X_OK):
        pytest.skip(f"dkimpy generates keys with {dknewkey.OPENSSL_BINARY}, which is missing")
    folder = tmp_path_factory.mktemp("dkim")
    private, dns = folder / "dkim.key", folder / "dkim.dns"
    dknewkey.GenRSAKeys(str(private), verbose=False)
    dknewkey.ExtractRSADnsPublicKey(str(private), str(dns), verbose=False)
    return KeyPair(private, private.read_bytes(), dns.read_bytes())


@pytest.fixture
def lookups(key: KeyPair) -> tuple[list[bytes], Callable[..., bytes]]:
    """A DNS stand-in for dkim.verify: publishes the key under its selector, and records
    every name asked for."""
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        asked.append(name)
        return key.record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else b""

    return asked, dnsfunc


def _rendered() -> RenderedEdition:
    html = (
        "<!doctype html><html lang=\"en\"><body><p>Caf\u00e9 &amp; more. " + "x" * 200
        + f'</p><a href="{MARK.unsubscribe_url}">Unsubscribe</a>'
        f'<a href="{MARK.preferences_url}">Prefs</a><p>Sent to {MARK.email}.</p>\n'
        ".starts with a dot\n</body></html>"
    )
    text = (f"Caf\u00e9 \u2014 weekly\n\nUnsubscribe: {MARK.unsubscribe_url}\n"
            f"Sent to {MARK.email}\n.dot line\n  trailing space   \n")
    return RenderedEdition(subject="The Test Review: Caf\u00e9 \u2014 a long subject line that "
                           "needs folding because it is long", preheader="", html=html, text=text,
                           mjml="", nonce=NONCE)


def _recipient(address: str = "ann@example.org", name: str | None = "Ann L\u00e9e",
               subscriber_id: int = 42) -> Recipient:
    return Recipient(
        email=address, name=name,
        personal=Personal(address, f"https://news.example.org/unsubscribe/TOK{subscriber_id}",
                          f"https://news.example.org/preferences/TOK{subscriber_id}"),
        message_id=message_id(NONCE, subscriber_id, DOMAIN),
        return_path=f"bounces+7-{subscriber_id}-0123456789ab@{DOMAIN}",
        unsubscribe_mailto=f"unsubscribe+{subscriber_id}-0123456789ab@{DOMAIN}",
    )


def _signed(key: KeyPair, recipient: Recipient | None = None) -> bytes:
    template = MessageTemplate(_rendered(), PUB, dkim=DkimSigner(DOMAIN, SELECTOR, key.pem))
    return template.build(recipient or _recipient(), date=WHEN).data


def _tags(data: bytes) -> dict[str, str]:
    """The tags of the message's DKIM-Signature header, white space removed."""
    msg = email.message_from_bytes(data, policy=policy.compat32)
    value = re.sub(r"\s+", "", str(msg["DKIM-Signature"]))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_a_signed_message_verifies(key: KeyPair,
                                   lookups: tuple[list[bytes], Callable[..., bytes]]) -> None:
    asked, dnsfunc = lookups
    data = _signed(key)
    assert data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(data, dnsfunc=dnsfunc) is True
    assert asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]


def test_the_signature_is_relaxed_and_covers_the_headers_that_matter(key: KeyPair) -> None:
    tags = _tags(_signed(key))
    assert tags["v"] == "1"
    assert tags["a"] == "rsa-sha256"
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == DOMAIN
    assert tags["s"] == SELECTOR
    assert "l" not in tags  # the whole body is signed
    signed = set(tags["h"].lower().split(":"))
    assert signed >= REQUIRED_SIGNED, REQUIRED_SIGNED - signed


def test_signing_leaves_the_message_itself_alone(key: KeyPair) -> None:
    plain = MessageTemplate(_rendered(), PUB).build(_recipient(), date=WHEN)
    signed = MessageTemplate(_rendered(), PUB, dkim=DkimSigner(DOMAIN, SELECTOR, key.pem)).build(
        _recipient(), date=WHEN)
    # The signature is one header put in front; not a byte of the message changes.
    assert signed.data.endswith(plain.data)
    header = signed.data[:-len(plain.data)]
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert re.fullmatch(rb"DKIM-Signature: [^\r\n]*(\r\n[ \t][^\r\n]*)*\r\n", header)
    assert (signed.mail_from, signed.recipient, signed.message_id) == (
        plain.mail_from, plain.recipient, plain.message_id)


@pytest.mark.parametrize(("what", "old", "new"), [
    ("the body", b"Caf=C3=A9 =E2=80=94 weekly", b"Cafe =E2=80=94 weekly"),
    ("a line added to the body", b"\r\n--=_digest_0123456789abcdef--\r\n",
     b"\r\nP.S. click here\r\n--=_digest_0123456789abcdef--\r\n"),
    ("the Subject", b"\r\nSubject: =?utf-8?", b"\r\nSubject: Re: =?utf-8?"),
    ("the To", b"\r\nTo: ", b"\r\nTo: mallory@example.net, "),
    ("List-Unsubscribe", b"https://news.example.org/unsubscribe/TOK42",
     b"https://evil.example.net/unsubscribe/TOK42"),
])
def test_tampering_breaks_the_signature(
    key: KeyPair, lookups: tuple[list[bytes], Callable[..., bytes]], what: str, old: bytes,
    new: bytes
) -> None:
    _, dnsfunc = lookups
    data = _signed(key)
    assert data.count(old) >= 1, what
    tampered = data.replace(old, new)
    assert dkim.verify(tampered, dnsfunc=dnsfunc) is False, what


def test_relaxed_canonicalization_survives_rewrapped_white_space(
    key: KeyPair, lookups: tuple[list[bytes], Callable[..., bytes]]
) -> None:
    _, dnsfunc = lookups
    data = _signed(key)
    # What relays may do: change the white space around a header value, add trailing
    # spaces on body lines.
    relayed = data.replace(b"\r\nMIME-Version: 1.0\r\n", b"\r\nMIME-Version:   1.0 \r\n")
    relayed = relayed.replace(b"\r\n--=_digest_0123456789abcdef--\r\n",
                              b"   \r\n--=_digest_0123456789abcdef--\r\n")
    assert relayed != data
    assert dkim.verify(relayed, dnsfunc=dnsfunc) is True


def test_every_recipients_copy_is_signed_on_its_own(
    key: KeyPair, lookups: tuple[list[bytes], Callable[..., bytes]]
) -> None:
    _, dnsfunc = lookups
    template = MessageTemplate(_rendered(), PUB, dkim=DkimSigner(DOMAIN, SELECTOR, key.pem))
    ann = template.build(_recipient("ann@example.org", "Ann", 1), date=WHEN).data
    bob = template.build(_recipient("bob@example.net", None, 2), date=WHEN).data
    assert _tags(ann)["b"] != _tags(bob)["b"]
    assert _tags(ann)["bh"] != _tags(bob)["bh"]  # the bodies carry each reader's links
    assert dkim.verify(ann, dnsfunc=dnsfunc) and dkim.verify(bob, dnsfunc=dnsfunc)
    # One reader's signature does not vouch for another reader's message.
    swapped = ann[:ann.index(b"\r\nFrom: ")] + bob[bob.index(b"\r\nFrom: "):]
    assert dkim.verify(swapped, dnsfunc=dnsfunc) is False


def test_a_key_published_under_another_selector_does_not_verify(key: KeyPair) -> None:
    data = MessageTemplate(_rendered(), PUB, dkim=DkimSigner(DOMAIN, "other", key.pem)).build(
        _recipient(), date=WHEN).data
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: b"") is False


# -- [dkim] in config.toml ----------------------------------------------------------------------


def _dkim_table(path: str, domain: str = DOMAIN, selector: str = SELECTOR) -> str:
    return f'[dkim]\ndomain = "{domain}"\nselector = "{selector}"\nprivate_key_path = "{path}"\n'


def test_the_dkim_table_loads(key: KeyPair, write_config: Callable[..., Path],
                              tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dkim.key").write_bytes(key.pem)
    settings = load_config(write_config(extra=_dkim_table("keys/dkim.key",
                                                          domain="News.Example.org")))
    assert settings.dkim == DkimConfig(DOMAIN, SELECTOR, tmp_path / "keys" / "dkim.key")


def test_a_parent_domain_covers_the_from_domain(key: KeyPair, write_config: Callable[..., Path],
                                                tmp_path: Path) -> None:
    (tmp_path / "dkim.key").write_bytes(key.pem)
    settings = load_config(write_config(extra=_dkim_table("dkim.key", domain="example.org")))
    assert settings.dkim is not None and settings.dkim.domain == "example.org"


def test_without_a_dkim_table_nothing_is_signed(write_config: Callable[..., Path]) -> None:
    assert load_config(write_config()).dkim is None


def _config_error(write_config: Callable[..., Path], extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(extra=extra))
    return str(info.value)


def test_a_missing_key_file_is_a_config_error(write_config: Callable[..., Path],
                                              tmp_path: Path) -> None:
    message = _config_error(write_config, _dkim_table("missing.key"))
    assert "[dkim] private_key_path" in message
    assert str(tmp_path / "missing.key") in message
    assert "does not exist" in message


def test_a_key_file_that_is_no_private_key_is_a_config_error(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "dkim.key").write_text("v=DKIM1; k=rsa; p=MIIBIjANBg\n", encoding="utf-8")
    message = _config_error(write_config, _dkim_table("dkim.key"))
    assert "[dkim] private_key_path" in message and "PEM private key" in message


def test_a_domain_that_does_not_cover_the_from_domain_is_a_config_error(
    key: KeyPair, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "dkim.key").write_bytes(key.pem)
    message = _config_error(write_config, _dkim_table("dkim.key", domain="mailer.example.com"))
    assert "[dkim] domain" in message
    assert "mailer.example.com" in message and "news.example.org" in message


def test_a_domain_that_only_ends_the_same_letters_does_not_cover(
    key: KeyPair, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "dkim.key").write_bytes(key.pem)
    message = _config_error(write_config, _dkim_table("dkim.key", domain="ample.org"))
    assert "[dkim] domain" in message


@pytest.mark.parametrize("missing", ["domain", "selector", "private_key_path"])
def test_each_dkim_key_is_required(key: KeyPair, write_config: Callable[..., Path],
                                   tmp_path: Path, missing: str) -> None:
    (tmp_path / "dkim.key").write_bytes(key.pem)
    table = "\n".join(line for line in _dkim_table("dkim.key").splitlines()
                      if not line.startswith(f"{missing} ="))
    message = _config_error(write_config, table + "\n")
    assert "[dkim]" in message and f"missing required key {missing!r}" in message


def test_the_configured_context_signs_what_it_sends(
    key: KeyPair, lookups: tuple[list[bytes], Callable[..., bytes]],
    make_context: Callable[..., Context], tmp_path: Path
) -> None:
    _, dnsfunc = lookups
    (tmp_path / "dkim.key").write_bytes(key.pem)
    ctx = make_context(extra=_dkim_table("dkim.key") + '[bounces]\naddress = "bounces@'
                       f'{DOMAIN}"\nunsubscribe_address = "unsubscribe@{DOMAIN}"\n')
    recipient = ctx.recipient(5, "ann@example.org", "ann@example.org", "Ann", NONCE, 3)
    message = ctx.message_template(_rendered()).build(recipient, date=WHEN)
    assert message.mail_from.startswith("bounces+3-5-")
    assert dkim.verify(message.data, dnsfunc=dnsfunc) is True
    tags = _tags(message.data)
    assert (tags["d"], tags["s"], tags["c"]) == (DOMAIN, SELECTOR, "relaxed/relaxed")
    parsed = email.message_from_bytes(message.data, policy=policy.default)
    assert "<mailto:unsubscribe+5-" in str(parsed["List-Unsubscribe"])
