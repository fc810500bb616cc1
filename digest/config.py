"""config.toml + environment → typed, validated settings.

Every mistake is reported as one ConfigError naming the file, the line where
it can be found, the key and what was expected. Secrets are never in the file:
it names the environment variables that hold them, and they are read only when
needed, so a command that needs no secret never asks for one.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError
from .tomlreader import Document, Table

DEFAULT_CONFIG = "config.toml"
CONFIG_ENV = "DIGEST_CONFIG"
MIN_SECRET_LENGTH = 16

Security = Literal["none", "starttls", "ssl"]
ThinPolicy = Literal["skip", "hold", "send"]
SUBJECT_FIELDS = ("{publication}", "{date}", "{lead}")
T = TypeVar("T")


@dataclass(frozen=True)
class Publication:
    """Who sends the digest; the footer's legal facts."""

    name: str
    url: str
    from_address: str
    postal_address: str
    reply_to: str | None = None
    language: str = "en"
    editors: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        """The domain of the From address: Message-IDs and List-Id live under it."""
        return self.from_address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class SourceConfig:
    """One feed to gather from."""

    name: str
    url: str
    enrich: bool = False  # read article pages for items that lack an image or a dek
    timeout: float | None = None  # None: [gather] timeout
    section: str | None = None  # the category of items that name none


@dataclass(frozen=True)
class GatherConfig:
    """How sources are fetched."""

    concurrency: int = 8
    timeout: float = 20.0
    max_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class DigestConfig:
    """How an edition is composed and which templates render it."""

    window_days: int = 7
    max_articles: int = 20
    sections: tuple[str, ...] = ()
    # category (or glob pattern such as "* | Middle East") → section name
    aliases: tuple[tuple[str, str], ...] = ()
    templates: Path | None = None
    per_section: int = 0  # at most this many articles per section (0: no cap)
    min_articles: int = 1  # below this, thin_policy decides
    thin_policy: ThinPolicy = "skip"
    subject: str = "{publication}: {lead}"
    intro_file: Path | None = None  # Markdown; read at each preview and send


@dataclass(frozen=True)
class ThemeConfig:
    """How the email looks; every colour must keep text readable (4.5:1 contrast)."""

    brand_color: str = "#9b1c1c"
    text_color: str = "#1a1a1a"
    background_color: str = "#f4f3ef"
    font_family: str = "Georgia, 'Times New Roman', serif"
    heading_font_family: str = "Georgia, 'Times New Roman', serif"
    logo_url: str | None = None
    logo_width: int = 200


@dataclass(frozen=True)
class SmtpConfig:
    """Where mail is handed over."""

    host: str = "localhost"
    port: int = 25
    security: Security = "none"
    username: str | None = None
    password_env: str | None = None
    max_connections: int = 4
    rate_per_second: float = 0.0
    timeout: float = 30.0
    ca_file: Path | None = None  # certificates to trust besides the system's (a private relay)
    first_retry_seconds: float = 30.0  # a deferred message is tried again after this, doubling
    retry_window_minutes: float = 10.0  # how long one run waits for deferred messages
    lease_seconds: float = 30.0  # a dead sender's claims are taken over after this


@dataclass(frozen=True)
class DkimConfig:
    """DKIM signing of every edition message (dkimpy, relaxed/relaxed)."""

    domain: str
    selector: str
    private_key_path: Path


@dataclass(frozen=True)
class BouncesConfig:
    """Where bounces, complaints and mailed unsubscribe requests arrive, and how to read them.

    ``address`` turns on VERP: each message's envelope sender is ``local+TOKEN@domain``,
    so a bounce names the delivery it is about. ``unsubscribe_address`` adds a mailto: to
    List-Unsubscribe; only set it when `digest bounces process` reads that mailbox.
    """

    address: str | None = None
    unsubscribe_address: str | None = None
    maildir: Path | None = None
    imap_host: str | None = None
    imap_port: int = 993
    imap_security: Security = "ssl"
    imap_user: str | None = None
    imap_password_env: str | None = None
    imap_folder: str = "INBOX"


@dataclass(frozen=True)
class ScheduleConfig:
    """When the weekly job runs; only the schedule daemon needs it."""

    cron: str = "0 7 * * 1"
    timezone: str = "UTC"
    misfire_grace_hours: float = 6.0  # a run missed by less than this is made up on start
    require_approval: bool = False  # prepare, mail the editors a preview, send on approval
    approval_deadline_hours: float = 24.0  # then approval_policy decides
    approval_policy: Literal["send", "hold"] = "hold"
    summary: bool = False  # mail the editors a summary after every run


@dataclass(frozen=True)
class WebConfig:
    """Where links in emails point and which variable holds the signing secret."""

    base_url: str = "http://localhost:8000"
    secret_key_env: str = "DIGEST_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret
    subscribe_per_minute: int = 10  # subscription requests from one client address
    # Behind a reverse proxy on this host: take the client's address from X-Forwarded-For
    # (sent by 127.0.0.1 only), so rate limits and the local-only preview see the real one.
    behind_proxy: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything digest knows from config.toml, plus how to read its secrets."""

    path: Path
    publication: Publication
    database_url: str
    sources: tuple[SourceConfig, ...]
    digest: DigestConfig
    smtp: SmtpConfig
    web: WebConfig
    theme: ThemeConfig = field(default_factory=ThemeConfig)
    gather: GatherConfig = field(default_factory=GatherConfig)
    dkim: DkimConfig | None = None
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    schedule: ScheduleConfig | None = None
    warnings: tuple[str, ...] = ()
    # Only the demo sets this; everywhere else the secret comes from the environment.
    builtin_secret: str | None = field(default=None, repr=False)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    @property
    def timezone(self) -> zoneinfo.ZoneInfo:
        """The schedule's timezone; UTC when no schedule is configured."""
        return zoneinfo.ZoneInfo(self.schedule.timezone if self.schedule else "UTC")

    def secret_key(self) -> str:
        """The signing secret for links, from the environment variable the config names."""
        if self.builtin_secret is not None:
            return self.builtin_secret
        name = self.web.secret_key_env
        value = self.environ.get(name, "")
        if not value:
            raise ConfigError(
                f"{self.path}: [web] secret_key_env: environment variable {name} is not set; "
                "it must hold the secret that signs unsubscribe and confirmation links",
                hint=f"export {name}=\"$(python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')\"",
            )
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{self.path}: [web] secret_key_env: environment variable {name} holds a secret "
                f"shorter than {MIN_SECRET_LENGTH} characters",
                hint="use a long random value, e.g. from secrets.token_urlsafe(32)",
            )
        return value

    def smtp_password(self) -> str | None:
        """The SMTP password from the environment, or None when no login is configured."""
        name = self.smtp.password_env
        if name is None:
            return None
        value = self.environ.get(name)
        if not value:
            raise ConfigError(
                f"{self.path}: [smtp] password_env: environment variable {name} is not set; "
                "it must hold the SMTP password",
                hint=f"export {name}=... before running digest",
            )
        return value

    def imap_password(self) -> str:
        """The bounce mailbox's password, from the environment."""
        name = self.bounces.imap_password_env or ""
        value = self.environ.get(name)
        if not value:
            raise ConfigError(
                f"{self.path}: [bounces] imap_password_env: environment variable {name} is not "
                "set; it must hold the bounce mailbox's password")
        return value

    def with_environ(self, environ: Mapping[str, str]) -> Settings:
        """A copy reading secrets from another environment (tests, the demo)."""
        return replace(self, environ=environ)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: --config, else $DIGEST_CONFIG, else ./config.toml."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return Path(chosen)


def load_config(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate a config file."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} not found",
            hint="create one with `digest init .`, or pass --config PATH / set DIGEST_CONFIG",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read: {exc}") from None
    return parse_config(text, file)


def parse_config(text: str, path: Path) -> Settings:
    """Validate the text of a config file; relative paths resolve against its folder."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    doc = Document(path, text)
    root = Table(doc, data, ())
    base = path.resolve().parent

    pub_t = root.table("publication", required=True)
    publication = Publication(
        name=pub_t.text("name", required=True),
        url=pub_t.url("url", required=True),
        from_address=pub_t.email("from_address", required=True),
        postal_address=pub_t.text("postal_address", required=True),
        reply_to=pub_t.email("reply_to"),
        language=pub_t.text("language", default="en"),
        editors=tuple(pub_t.each("editors", pub_t.email_value)),
    )
    pub_t.finish()

    db_t = root.table("database")
    database_url = _resolve_database_url(db_t.text("url", default="sqlite:///digest.db"), base)
    db_t.finish()

    sources = []
    seen_names: set[str] = set()
    for src_t in root.tables("sources"):
        name = src_t.text("name", required=True)
        if name in seen_names:
            src_t.fail("name", f"another source is already called {name!r}; names must be unique")
        seen_names.add(name)
        url = src_t.text("url", required=True)
        sources.append(SourceConfig(
            name=name,
            url=_resolve_source_url(url, base, src_t),
            enrich=src_t.boolean("enrich", default=False),
            timeout=src_t.number("timeout", default=None, minimum=0.1),
            section=src_t.text("section"),
        ))
        src_t.finish()

    ga_t = root.table("gather")
    gather = GatherConfig(
        concurrency=ga_t.integer("concurrency", default=8, minimum=1, maximum=100),
        timeout=ga_t.number("timeout", default=20.0, minimum=0.1),
        max_bytes=int(ga_t.number("max_body_mb", default=10.0, minimum=0.01) * 1024 * 1024),
    )
    ga_t.finish()

    dg_t = root.table("digest")
    templates = dg_t.text("templates")
    intro_file = dg_t.text("intro_file")
    digest = DigestConfig(
        window_days=dg_t.integer("window_days", default=7, minimum=1, maximum=366),
        max_articles=dg_t.integer("max_articles", default=20, minimum=1, maximum=200),
        sections=tuple(dg_t.each("sections", dg_t.text_value)),
        aliases=tuple(dg_t.mapping("aliases").items()),
        templates=(base / templates) if templates else None,
        per_section=dg_t.integer("per_section", default=0, minimum=0, maximum=200),
        min_articles=dg_t.integer("min_articles", default=1, minimum=1, maximum=200),
        thin_policy=dg_t.choice("thin_policy", ("skip", "hold", "send"),  # type: ignore[arg-type]
                                default="skip"),
        subject=dg_t.text("subject", default="{publication}: {lead}"),
        intro_file=(base / intro_file) if intro_file else None,
    )
    if digest.templates is not None and not digest.templates.is_dir():
        dg_t.fail("templates", f"folder {digest.templates} does not exist")
    unknown_fields = set(re.findall(r"\{[^}]*\}", digest.subject)) - set(SUBJECT_FIELDS)
    if unknown_fields:
        dg_t.fail("subject", f"unknown field {sorted(unknown_fields)[0]} "
                  f"(the subject may use {', '.join(SUBJECT_FIELDS)})")
    dg_t.finish()

    smtp_t = root.table("smtp")
    security = smtp_t.choice("security", ("none", "starttls", "ssl"), default="none")
    smtp = SmtpConfig(
        host=smtp_t.text("host", default="localhost"),
        port=smtp_t.integer("port", default=465 if security == "ssl" else 25, minimum=1,
                            maximum=65535),
        security=security,  # type: ignore[arg-type]
        username=smtp_t.text("username"),
        password_env=smtp_t.env_name("password_env"),
        max_connections=smtp_t.integer("max_connections", default=4, minimum=1, maximum=64),
        rate_per_second=smtp_t.number("rate_per_second", default=0.0, minimum=0.0),
        timeout=smtp_t.number("timeout", default=30.0, minimum=1.0),
        ca_file=_existing_file(smtp_t, "ca_file", base),
        first_retry_seconds=smtp_t.number("first_retry_seconds", default=30.0, minimum=0.1),
        retry_window_minutes=smtp_t.number("retry_window_minutes", default=10.0, minimum=0.0),
        lease_seconds=smtp_t.number("lease_seconds", default=30.0, minimum=1.0),
    )
    if smtp.username and not smtp.password_env:
        smtp_t.fail("password_env", "username is set, so password_env must name the "
                    "environment variable that holds the password")
    smtp_t.finish()

    dkim = None
    if "dkim" in data:
        dk_t = root.table("dkim")
        dkim = DkimConfig(
            domain=dk_t.text("domain", required=True).lower(),
            selector=dk_t.text("selector", required=True),
            private_key_path=_existing_file(dk_t, "private_key_path", base, required=True),
        )
        key_text = dkim.private_key_path.read_bytes()
        if b"PRIVATE KEY" not in key_text:
            dk_t.fail("private_key_path", f"{dkim.private_key_path} does not hold a PEM "
                      "private key")
        problem = _dkim_key_problem(key_text)
        if problem:
            dk_t.fail("private_key_path", f"{dkim.private_key_path}: dkimpy cannot sign with "
                      f"this key ({problem}); DKIM needs an RSA key in PEM")
        if not (publication.domain == dkim.domain
                or publication.domain.endswith("." + dkim.domain)):
            dk_t.fail("domain", f"{dkim.domain!r} does not cover the From domain "
                      f"{publication.domain!r}, so receivers would not align the signature")
        dk_t.finish()

    bo_t = root.table("bounces")
    bounces = BouncesConfig(
        address=bo_t.email("address"),
        unsubscribe_address=bo_t.email("unsubscribe_address"),
        maildir=(base / bo_t.text("maildir")) if bo_t.text("maildir") else None,
        imap_host=bo_t.text("imap_host"),
        imap_port=bo_t.integer("imap_port", default=993, minimum=1, maximum=65535),
        imap_security=bo_t.choice("imap_security", ("none", "starttls", "ssl"),  # type: ignore[arg-type]
                                  default="ssl"),
        imap_user=bo_t.text("imap_user"),
        imap_password_env=bo_t.env_name("imap_password_env"),
        imap_folder=bo_t.text("imap_folder", default="INBOX"),
    )
    if bounces.imap_host and not (bounces.imap_user and bounces.imap_password_env):
        bo_t.fail("imap_user", "imap_host is set, so imap_user and imap_password_env are "
                  "needed too")
    bo_t.finish()

    schedule = None
    if "schedule" in data:
        sch_t = root.table("schedule")
        schedule = ScheduleConfig(
            cron=sch_t.text("cron", required=True),
            timezone=sch_t.text("timezone", default="UTC"),
            misfire_grace_hours=sch_t.number("misfire_grace_hours", default=6.0, minimum=0.0),
            require_approval=sch_t.boolean("require_approval", default=False),
            approval_deadline_hours=sch_t.number("approval_deadline_hours", default=24.0,
                                                 minimum=0.0),
            approval_policy=sch_t.choice("approval_policy", ("send", "hold"),  # type: ignore[arg-type]
                                         default="hold"),
            summary=sch_t.boolean("summary", default=False),
        )
        if (schedule.require_approval or schedule.summary) and not publication.editors:
            sch_t.fail("require_approval" if schedule.require_approval else "summary",
                       "mails go to the editors, but [publication] editors is empty")
        _check_cron(schedule.cron, sch_t)
        try:
            zoneinfo.ZoneInfo(schedule.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            sch_t.fail("timezone", f"unknown timezone {schedule.timezone!r} "
                       "(expected an IANA name such as Europe/Berlin)")
        sch_t.finish()

    th_t = root.table("theme")
    defaults = ThemeConfig()
    theme = ThemeConfig(
        brand_color=th_t.color("brand_color", default=defaults.brand_color),
        text_color=th_t.color("text_color", default=defaults.text_color),
        background_color=th_t.color("background_color", default=defaults.background_color),
        font_family=th_t.text("font_family", default=defaults.font_family),
        heading_font_family=th_t.text("heading_font_family",
                                      default=defaults.heading_font_family),
        logo_url=th_t.url("logo_url"),
        logo_width=th_t.integer("logo_width", default=defaults.logo_width, minimum=20,
                                maximum=600),
    )
    for key, fg, bg, where in (
        ("text_color", theme.text_color, "#ffffff", "on the white page"),
        ("brand_color", theme.brand_color, "#ffffff", "for links and labels on the white page"),
        ("background_color", MUTED_TEXT, theme.background_color,
         f"behind the footer's {MUTED_TEXT} text"),
    ):
        ratio = contrast_ratio(fg, bg)
        if ratio < MIN_CONTRAST:
            th_t.fail(key, f"{fg} on {bg} has a contrast of {ratio:.2f}:1 {where}; "
                      f"readable text needs at least {MIN_CONTRAST}:1")
    th_t.finish()

    web_t = root.table("web")
    web = WebConfig(
        base_url=web_t.url("base_url", default="http://localhost:8000").rstrip("/"),
        secret_key_env=web_t.env_name("secret_key_env") or "DIGEST_SECRET_KEY",
        subscribe_per_minute=web_t.integer("subscribe_per_minute", default=10, minimum=1,
                                           maximum=10_000),
        behind_proxy=web_t.boolean("behind_proxy", default=False),
    )
    web_t.finish()
    root.finish()

    warnings = []
    parts = urlsplit(web.base_url)
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        warnings.append(
            f"{path}: [web] base_url is plain http ({web.base_url}); unsubscribe links in "
            "emails should use https in production"
        )
    return Settings(
        path=path,
        publication=publication,
        database_url=database_url,
        sources=tuple(sources),
        digest=digest,
        smtp=smtp,
        web=web,
        theme=theme,
        gather=gather,
        dkim=dkim,
        bounces=bounces,
        schedule=schedule,
        warnings=tuple(warnings),
    )


MIN_CONTRAST = 4.5
MUTED_TEXT = "#555555"  # bylines and the footer, as the templates write them


def _luminance(color: str) -> float:
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(foreground: str, background: str) -> float:
    """The WCAG 2 contrast ratio of two #rrggbb colours (1 to 21)."""
    a, b = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def _resolve_database_url(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute against the config file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix):]
        if rest and rest != ":memory:" and not rest.startswith(":"):
            return prefix + str(base / rest)
    return url


def _resolve_source_url(url: str, base: Path, table: Table) -> str:
    """Accept http(s) URLs and local files; a relative file path resolves against base."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        if not urlsplit(url).netloc:
            table.fail("url", f"{url!r} has no host")
        return url
    if scheme == "file":
        return url
    if scheme and len(scheme) > 1:
        table.fail("url", f"unsupported scheme {scheme!r} in {url!r} "
                   "(expected http://, https:// or a local file path)")
    return (base / url).resolve().as_uri()


def _dkim_key_problem(key: bytes) -> str | None:
    """Why dkimpy cannot sign with ``key``, or None (a trial signature, once, at load)."""
    import dkim

    try:
        dkim.sign(b"From: a@example.org\r\nSubject: t\r\n\r\nx\r\n", b"s", b"example.org", key,
                  include_headers=[b"from"])
    except Exception as exc:  # noqa: BLE001 - dkimpy raises several kinds; any is a no
        return f"{type(exc).__name__}: {exc}".strip()[:200]
    return None


def _existing_file(table: Table, key: str, base: Path, *, required: bool = False) -> Any:
    value = table.text(key, required=required)
    if value is None:
        return None
    path = (base / value).resolve()
    if not path.is_file():
        table.fail(key, f"file {path} does not exist")
    return path


def _check_cron(expr: str, table: Table) -> None:
    fields = expr.split()
    if len(fields) != 5:
        table.fail("cron", f"expected 5 fields (minute hour day month weekday), got {len(fields)} "
                   f"in {expr!r}")
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        table.fail("cron", f"invalid cron expression {expr!r}: {exc}")
