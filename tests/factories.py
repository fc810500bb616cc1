"""Plain test data for the pure stages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.config import Settings, parse_config
from digest.domain import Article
from tests.conftest import config_text

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def article(
    id: int,
    *,
    title: str | None = None,
    category: str | None = "Middle East",
    hours_ago: float = 1,
    image: str | None = "https://cdn.example.org/img.jpg",
    pinned: bool = False,
    author: str | None = "Jane Roe",
    summary: str = "A dek that explains the story.",
    credit: str | None = "Photo: Agency",
    url: str | None = None,
) -> Article:
    """An article published ``hours_ago`` before NOW."""
    return Article(
        id=id, url=url or f"https://news.example.org/a/{id}", title=title or f"Article {id}",
        summary_html=f"<p>{summary}</p>", summary_text=summary, author=author,
        category=category, image_url=image, image_credit=credit,
        published_at=NOW - timedelta(hours=hours_ago), source="Test", pinned=pinned,
    )


def settings(tmp_path: Path, **kwargs: object) -> Settings:
    """Settings from the test config, secret included."""
    path = tmp_path / "config.toml"
    path.write_text(config_text(**kwargs))  # type: ignore[arg-type]
    return parse_config(path.read_text(), path).with_environ(
        {"DIGEST_SECRET_KEY": "test-secret-0123456789-abcdefghij"})
