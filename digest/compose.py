"""Articles + settings + time → Edition. Pure: the caller supplies the candidates and the clock."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta, tzinfo

from .config import DigestConfig
from .domain import Article, Edition, Period, Section

MORE = "More"


def weekly_period(now: datetime, tz: tzinfo, window_days: int) -> Period:
    """The period of a scheduled send: keyed by the ISO week of ``now`` in ``tz``,
    covering the ``window_days`` before ``now``."""
    local = now.astimezone(tz)
    year, week, _ = local.isocalendar()
    return Period(key=f"{year}-W{week:02d}", start=now - timedelta(days=window_days), end=now)


def explicit_period(since: datetime | date, until: datetime | date, tz: tzinfo) -> Period:
    """A period named by --since/--until. Dates are whole days in ``tz``; ``until`` is inclusive."""
    start = _as_instant(since, tz)
    whole_day = isinstance(until, date) and not isinstance(until, datetime)
    end = _as_instant(until, tz, next_day=whole_day)
    if end <= start:
        raise ValueError(f"--until ({until}) must come after --since ({since})")
    key = f"{_label(since)}..{_label(until)}"
    return Period(key=key, start=start, end=end)


def _as_instant(value: datetime | date, tz: tzinfo, next_day: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    day = value + timedelta(days=1) if next_day else value
    return datetime.combine(day, time.min, tzinfo=tz)


def _label(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M")
    return value.isoformat()


def section_of(category: str | None, aliases: Mapping[str, str]) -> str | None:
    """The section a category belongs to through the aliases (exact, then glob patterns,
    case-insensitive); the category itself when no alias matches; None when there is none."""
    if not category:
        return None
    lowered = category.casefold()
    for pattern, section in aliases.items():
        if pattern.casefold() == lowered:
            return section
    for pattern, section in aliases.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(lowered, pattern.casefold()):
            return section
    return category


def _newest_first(articles: Sequence[Article]) -> list[Article]:
    # Stable: equal times keep the id order, so the same input always gives the same edition.
    return sorted(articles, key=lambda a: (a.published_at, a.id), reverse=True)


def choose_lead(articles: Sequence[Article]) -> Article | None:
    """The pinned article, else the newest with an image, else the newest."""
    ordered = _newest_first(articles)
    for article in ordered:
        if article.pinned:
            return article
    for article in ordered:
        if article.image_url:
            return article
    return ordered[0] if ordered else None


def compose(
    candidates: Sequence[Article],
    cfg: DigestConfig,
    period: Period,
    *,
    intro_html: str = "",
    intro_text: str = "",
) -> Edition:
    """Choose, order and group the period's articles into an edition."""
    aliases = dict(cfg.aliases)
    in_window = [a for a in candidates
                 if a.pinned or period.start <= a.published_at < period.end]
    ordered = _newest_first(in_window)
    lead = choose_lead(ordered)

    def name_of(article: Article) -> str:
        name = section_of(article.category, aliases)
        if cfg.sections and name not in cfg.sections:
            return MORE
        return name or MORE

    # The newest articles, at most per_section of each section and max_articles in all
    # (the lead included, and not counted against its section).
    kept = [lead] if lead is not None else []
    per_section: dict[str, int] = {}
    for article in ordered:
        if len(kept) >= cfg.max_articles:
            break
        if article is lead:
            continue
        name = name_of(article)
        if cfg.per_section and per_section.get(name, 0) >= cfg.per_section:
            continue
        per_section[name] = per_section.get(name, 0) + 1
        kept.append(article)
    rest = kept[1:] if lead is not None else kept

    groups: dict[str, list[Article]] = {}
    for article in rest:
        groups.setdefault(name_of(article), []).append(article)

    if cfg.sections:
        order = [s for s in cfg.sections if s in groups]
    else:
        # The order in which sections first appear, reading the newest articles (the lead
        # included) first.
        seen = dict.fromkeys(name_of(a) for a in _newest_first(kept))
        order = [s for s in seen if s in groups and s != MORE]
    if MORE in groups and MORE not in order:
        order.append(MORE)
    sections = tuple(Section(name, tuple(_newest_first(groups[name]))) for name in order)
    return Edition(period=period, lead=lead, sections=sections,
                   intro_html=intro_html, intro_text=intro_text,
                   lead_section=name_of(lead) if lead is not None else None)


def drop_sections(plan: Edition, excluded: Iterable[str]) -> Edition:
    """The same edition without some sections (a subscriber's preferences). When the lead's
    section goes, the newest remaining article with an image leads instead."""
    gone = set(excluded)
    sections = [s for s in plan.sections if s.name not in gone]
    lead, lead_section = plan.lead, plan.lead_section
    if lead is not None and lead_section in gone:
        pool = [a for s in sections for a in s.articles]
        lead = choose_lead(pool)
        lead_section = next((s.name for s in sections if lead in s.articles), None)
        sections = [Section(s.name, tuple(a for a in s.articles if a is not lead))
                    for s in sections]
        sections = [s for s in sections if s.articles]
    return replace(plan, lead=lead, lead_section=lead_section, sections=tuple(sections))
