"""Articles + settings + time → Edition."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.compose import MORE, choose_lead, compose, explicit_period, section_of, weekly_period
from digest.config import DigestConfig
from tests.factories import NOW, article

PERIOD = weekly_period(NOW, UTC, 7)


def test_weekly_period_is_keyed_by_iso_week_in_the_timezone() -> None:
    assert PERIOD.key == "2026-W48"
    assert PERIOD.end == NOW and PERIOD.start == NOW - timedelta(days=7)
    # Sunday 23:30 UTC is already Monday in Tokyo: another ISO week.
    sunday = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert weekly_period(sunday, UTC, 7).key == "2026-W48"
    assert weekly_period(sunday, ZoneInfo("Asia/Tokyo"), 7).key == "2026-W49"


def test_explicit_period_counts_until_as_a_whole_day() -> None:
    period = explicit_period(date(2026, 11, 16), date(2026, 11, 22), UTC)
    assert period.key == "2026-11-16..2026-11-22"
    assert period.start == datetime(2026, 11, 16, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 23, tzinfo=UTC)
    with pytest.raises(ValueError, match="must come after"):
        explicit_period(date(2026, 11, 22), date(2026, 11, 16), UTC)


def test_sections_follow_the_configured_order_and_unknown_go_to_more() -> None:
    arts = [article(1, category="Asia"), article(2, category="Europe", hours_ago=2),
            article(3, category="Sports", hours_ago=3), article(4, category=None, hours_ago=4),
            article(5, category="Asia", hours_ago=5, image=None)]
    edition = compose(arts, DigestConfig(sections=("Europe", "Asia")), PERIOD)
    assert edition.lead is not None and edition.lead.id == 1
    assert [s.name for s in edition.sections] == ["Europe", "Asia", MORE]
    assert [a.id for a in edition.sections[2].articles] == [3, 4]


def test_default_section_order_is_first_appearance() -> None:
    arts = [article(1, category="B"), article(2, category="A", hours_ago=2),
            article(3, category="B", hours_ago=3), article(4, category="C", hours_ago=4)]
    edition = compose(arts, DigestConfig(), PERIOD)
    assert [s.name for s in edition.sections] == ["B", "A", "C"]


def test_aliases_exact_and_glob() -> None:
    aliases = {"Analysis | Middle East": "Middle East", "* | Europe": "Europe"}
    assert section_of("analysis | middle east", aliases) == "Middle East"
    assert section_of("Opinion | Europe", aliases) == "Europe"
    assert section_of("Asia", aliases) == "Asia"
    assert section_of(None, aliases) is None


def test_lead_is_pinned_else_newest_with_image() -> None:
    arts = [article(1, image=None), article(2, hours_ago=2), article(3, hours_ago=3)]
    assert choose_lead(arts).id == 2  # type: ignore[union-attr]
    arts.append(article(4, hours_ago=40, pinned=True, image=None))
    assert choose_lead(arts).id == 4  # type: ignore[union-attr]
    assert choose_lead([article(9, image=None)]).id == 9  # type: ignore[union-attr]
    assert choose_lead([]) is None


def test_lead_is_not_repeated_in_its_section() -> None:
    edition = compose([article(1), article(2, hours_ago=2)], DigestConfig(), PERIOD)
    assert [a.id for a in edition.articles] == [1, 2]


def test_max_articles_keeps_the_newest_and_the_lead() -> None:
    arts = [article(i, hours_ago=i, image=None) for i in range(1, 30)]
    arts.append(article(99, hours_ago=100, pinned=True))
    edition = compose(arts, DigestConfig(max_articles=5), PERIOD)
    assert len(edition.articles) == 5
    assert edition.lead is not None and edition.lead.id == 99
    assert sorted(a.id for a in edition.articles if a.id != 99) == [1, 2, 3, 4]


def test_articles_outside_the_window_are_left_out() -> None:
    arts = [article(1, hours_ago=1), article(2, hours_ago=24 * 8), article(3, hours_ago=-1)]
    edition = compose(arts, DigestConfig(), PERIOD)
    assert [a.id for a in edition.articles] == [1]


def test_newest_first_inside_a_section_and_stable() -> None:
    arts = [article(3, hours_ago=5, image=None), article(1, hours_ago=5, image=None),
            article(2, hours_ago=1, image=None)]
    edition = compose(arts, DigestConfig(), PERIOD)
    again = compose(list(reversed(arts)), DigestConfig(), PERIOD)
    assert [a.id for a in edition.articles] == [2, 3, 1]
    assert edition == again


def test_empty_window_gives_an_empty_edition() -> None:
    assert compose([], DigestConfig(), PERIOD).is_empty


def test_per_section_cap_keeps_the_newest_of_each_section_and_fills_up() -> None:
    arts = [article(i, category="Asia" if i <= 6 else "Europe", hours_ago=i, image=None)
            for i in range(1, 10)]
    edition = compose(arts, DigestConfig(per_section=2, max_articles=5), PERIOD)
    by_section = {s.name: [a.id for a in s.articles] for s in edition.sections}
    assert edition.lead is not None and edition.lead.id == 1
    assert by_section == {"Asia": [2, 3], "Europe": [7, 8]}


def test_pinned_article_older_than_the_window_still_leads() -> None:
    arts = [article(1), article(2, hours_ago=24 * 30, pinned=True)]
    edition = compose(arts, DigestConfig(), PERIOD)
    assert edition.lead is not None and edition.lead.id == 2
    assert [a.id for a in edition.articles] == [2, 1]


def test_drop_sections_keeps_order_and_finds_a_new_lead() -> None:
    from digest.compose import drop_sections

    arts = [article(1, category="Asia"), article(2, category="Asia", hours_ago=2),
            article(3, category="Europe", hours_ago=3),
            article(4, category="Africa", hours_ago=4, image=None)]
    plan = compose(arts, DigestConfig(sections=("Europe", "Asia", "Africa")), PERIOD)
    assert plan.lead_section == "Asia" and plan.section_names == ("Asia", "Europe", "Africa")
    no_europe = drop_sections(plan, ["Europe"])
    assert no_europe.lead == plan.lead and [s.name for s in no_europe.sections] == [
        "Asia", "Africa"]
    no_asia = drop_sections(plan, ["Asia"])
    assert no_asia.lead is not None and no_asia.lead.id == 3
    assert [(s.name, [a.id for a in s.articles]) for s in no_asia.sections] == [("Africa", [4])]
    assert drop_sections(plan, ["Asia", "Europe", "Africa"]).is_empty
