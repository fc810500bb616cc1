"""Edition → HTML (Jinja2 → MJML → HTML) and plain text, rendered once per edition.

The templates get the edition as data and never evaluate it: autoescaping is on
for the MJML template, and article fields are only ever variables. The personal
parts (address, unsubscribe and preferences links) are rendered as markers that
delivery replaces per recipient (see domain.Personal).
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
import textwrap
from dataclasses import dataclass
from datetime import datetime, tzinfo
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import mjml
from markdown_it import MarkdownIt
from mjml.elements._base import BodyComponent

from .compose import MORE, section_of
from .config import Publication, Settings
from .domain import Article, Edition, Personal, RenderedEdition
from .errors import TemplateError
from .gather.clean import excerpt, html_to_text, sanitize_html

PACKAGED_TEMPLATES = Path(__file__).with_name("email_templates")
TEXT_WIDTH = 78
PREHEADER_CHARS = 110


# -- mjml 0.12.0 writes attribute values without escaping them -------------------------------
# An alt, title or href holding a double quote (which it receives already unescaped from its
# HTML parser) comes out as broken HTML, and `x" onerror="…` as a live attribute. Reference MJML
# escapes them. The fix belongs in the one function that serialises attributes; it is pinned to
# the version it was written for, and tests/unit/test_render_security.py proves it holds.
MJML_VERSION = version("mjml")
_PATCHED_FOR = "0.12.0"


def _escaped_html_attrs(self: BodyComponent, **attrs: Any) -> str:
    parts = []
    for key, value in attrs.items():
        if key == "style":
            value = self.styles(value)
        elif key in ("class_", "for_"):
            key = key[:-1]
            if not value:
                continue
        if value is None:
            continue
        parts.append(f'{key}="{_attr(str(value))}"')
    return " ".join(parts)


def _attr(value: str) -> str:
    # Inside a double-quoted attribute only &, <, > and " need escaping; leaving ' alone
    # keeps font stacks like 'Times New Roman' short.
    return html_lib.escape(value, quote=False).replace('"', "&quot;")


if MJML_VERSION != _PATCHED_FOR:  # pragma: no cover - guarded by the exact pin in pyproject
    raise ImportError(
        f"digest's attribute-escaping fix was written for mjml {_PATCHED_FOR}, "
        f"but mjml {MJML_VERSION} is installed; check the fix before upgrading"
    )
BodyComponent.html_attrs = _escaped_html_attrs


@dataclass(frozen=True)
class Links:
    """Where the non-personal links of an edition point."""

    archive_url: str
    subscribe_url: str


def environment(templates: Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment over the editor's templates, falling back to the packaged ones."""
    loaders: list[jinja2.BaseLoader] = []
    if templates is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates)))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGED_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        # On for everything but the plain-text templates, which are never HTML.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=(), disabled_extensions=("txt.j2",),
            default_for_string=True, default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = wrap
    env.filters["excerpt"] = _excerpt_filter
    return env


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "") -> str:
    """Wrap plain text at ``width``, paragraph by paragraph, never breaking a URL."""
    out = []
    for paragraph in re.split(r"\n\s*\n", str(text).strip()):
        lines = paragraph.splitlines()
        if all(line.lstrip().startswith(("- ", "* ")) for line in lines if line.strip()):
            out.append("\n".join(
                textwrap.fill(line.strip(), width, initial_indent=indent,
                              subsequent_indent=indent + "  ", break_long_words=False,
                              break_on_hyphens=False)
                for line in lines if line.strip()
            ))
            continue
        out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                 subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False))
    return "\n\n".join(out)


def _excerpt_filter(text: str, limit: int = 300) -> str:
    return excerpt(str(text), limit)


def make_subject(template: str, publication: Publication, edition: Edition, date: str) -> str:
    """The subject line from its template ({publication}, {date}, {lead})."""
    lead = edition.lead.title if edition.lead else ""
    subject = (
        template.replace("{publication}", publication.name)
        .replace("{date}", date)
        .replace("{lead}", lead)
    )
    subject = re.sub(r"\s+", " ", subject).strip(" :—-")
    return subject if len(subject) <= 150 else subject[:149].rstrip() + "…"


def preheader(edition: Edition) -> str:
    """The inbox preview line: the intro's first words, else the lead's dek."""
    source = edition.intro_text or (edition.lead.summary_text if edition.lead else "")
    if not source and edition.articles:
        source = " · ".join(a.title for a in edition.articles[:3])
    return excerpt(source, PREHEADER_CHARS)


def _date_label(when: datetime, tz: tzinfo) -> str:
    local = when.astimezone(tz)
    return f"{local.day} {local:%B %Y}"


CARD_IMAGE_WIDTH = 180


def _height(article: Article, width: int) -> int | None:
    """The image's height at ``width``, when the feed declared its size."""
    if article.image_width and article.image_height:
        return max(1, round(width * article.image_height / article.image_width))
    return None


def _article_view(article: Article, tz: tzinfo) -> dict[str, Any]:
    local = article.published_at.astimezone(tz)
    return {
        "card_height": _height(article, CARD_IMAGE_WIDTH),
        "id": article.id,
        "url": article.url,
        "title": article.title,
        "dek": article.summary_text,
        "author": article.author,
        "section": article.category,
        "image_url": article.image_url,
        "image_credit": article.image_credit,
        "image_alt": article.title,
        "date": f"{local.day} {local:%b}",
        "source": article.source,
    }


def render_edition(
    edition: Edition,
    settings: Settings,
    env: jinja2.Environment,
    *,
    now: datetime,
    nonce: str | None = None,
) -> RenderedEdition:
    """Render an edition once: subject, preheader, MJML, HTML and text, with markers."""
    nonce = nonce or secrets.token_hex(8)
    tz = settings.timezone
    date = _date_label(edition.period.end if edition.period.end <= now else now, tz)
    subject = make_subject(settings.digest.subject, settings.publication, edition, date)
    links = Links(
        archive_url=f"{settings.web.base_url}/archive/{edition.period.key}",
        subscribe_url=f"{settings.web.base_url}/subscribe",
    )
    section_label = {a.id: s.name for s in edition.sections for a in s.articles}
    lead = _article_view(edition.lead, tz) if edition.lead else None
    if lead is not None and edition.lead is not None:
        # The lead's section as composed; its own category when that is only "More".
        lead["section"] = (edition.lead_section if edition.lead_section not in (None, MORE)
                           else section_of(edition.lead.category, dict(settings.digest.aliases)))
    context = {
        "publication": settings.publication,
        "theme": settings.theme,
        "subject": subject,
        "preheader": preheader(edition),
        "date": date,
        "period": edition.period.key,
        "intro_html": jinja2_markup(edition.intro_html),
        "intro_text": edition.intro_text,
        "lead": lead,
        "sections": [
            {"name": s.name, "articles": [
                dict(_article_view(a, tz), section=section_label.get(a.id)) for a in s.articles
            ]}
            for s in edition.sections
        ],
        "links": links,
        "personal": Personal.markers(nonce),
        "text_width": TEXT_WIDTH,
    }
    try:
        source = env.get_template("digest.mjml.j2").render(context)
        text = env.get_template("digest.txt.j2").render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(_describe_template_error(exc)) from None
    html = mjml_to_html(source)
    return RenderedEdition(
        subject=subject,
        preheader=context["preheader"],
        html=html,
        text=_tidy_text(text),
        mjml=source,
        nonce=nonce,
        archive_url=links.archive_url,
        article_urls=tuple(a.url for a in edition.articles),
    )


def intro_from_markdown(source: str) -> tuple[str, str]:
    """The editor's intro: Markdown → (sanitised HTML, plain text).

    Raw HTML in the Markdown is not passed through; the result goes through the same
    allow-list as feed summaries.
    """
    text = source.strip()
    if not text:
        return "", ""
    rendered = MarkdownIt("commonmark", {"html": False}).render(text)
    html = sanitize_html(rendered)
    return html, html_to_text(html)


def jinja2_markup(value: str) -> Any:
    """Mark already-sanitised HTML (the intro, rendered from Markdown) as safe."""
    return markupsafe.Markup(value)  # noqa: S704 - sanitised by the caller


def mjml_to_html(source: str) -> str:
    """MJML → HTML without comments; an MJML error becomes a TemplateError."""
    try:
        result = mjml.mjml_to_html(source, keep_comments=False)
    except (KeyError, ValueError, AttributeError, TypeError) as exc:
        raise TemplateError(
            f"MJML could not render the email template: {type(exc).__name__}: {exc}",
            hint="check digest.mjml.j2 for unknown mj-* tags (mjml-python supports MJML 4's "
            "standard components only)",
        ) from None
    if result.errors:
        raise TemplateError("MJML reported: " + "; ".join(map(str, result.errors)))
    return _add_head_meta(minify(str(result.html)))


# mjml-python has no mj-raw in mj-head; these tell mail clients the email has its own
# dark-mode styles (see the mj-style block of digest.mjml.j2) instead of inverting it.
_HEAD_META = (
    '<meta name="color-scheme" content="light dark">'
    '<meta name="supported-color-schemes" content="light dark">'
)


def minify(html: str) -> str:
    """Drop the indentation and blank lines mjml writes (a third of its output).

    Line breaks stay, so words never run together; the edition holds no <pre>, where
    leading white space would matter.
    """
    return "\n".join(stripped for line in html.splitlines() if (stripped := line.strip()))


def _add_head_meta(html: str) -> str:
    return html.replace("<head>", "<head>\n    " + _HEAD_META, 1)


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _describe_template_error(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template {exc.name} not found"
    return f"email template error: {exc}"
