"""config.toml → settings; every mistake named by file, line and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from digest.config import load_config, parse_config
from digest.errors import ConfigError
from digest.sample import sample_config
from tests.conftest import config_text


def test_the_sample_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "email_templates").mkdir()
    settings = parse_config(sample_config("sample-feed.xml"), tmp_path / "config.toml")
    assert settings.publication.name == "The Meridian Review"
    assert settings.sources[0].url == (tmp_path / "sample-feed.xml").as_uri()
    assert settings.database_url == f"sqlite:///{tmp_path / 'digest.db'}"
    assert settings.digest.aliases[0] == ("* | Middle East", "Middle East")
    assert settings.schedule is not None and settings.schedule.timezone == "Europe/London"


def test_defaults(write_config: Callable[..., Path]) -> None:
    settings = load_config(write_config())
    assert settings.digest.window_days == 7
    assert settings.digest.max_articles == 20
    assert settings.smtp.max_connections == 2
    assert settings.smtp.rate_per_second == 0
    assert settings.web.secret_key_env == "DIGEST_SECRET_KEY"
    assert settings.schedule is None
    assert str(settings.timezone) == "UTC"


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    return info.value.message


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    text = config_text().replace("max_connections = 2", "max_connections = 2\nmax_conections = 3")
    message = _error(tmp_path, text)
    assert "config.toml:" in message and "[smtp]" in message and "max_conections" in message
    line = int(message.split("config.toml:")[1].split(":")[0])
    assert text.splitlines()[line - 1].startswith("max_conections")


def test_wrong_type(tmp_path: Path) -> None:
    message = _error(tmp_path, config_text().replace("window_days = 7", 'window_days = "7"'))
    assert "[digest] window_days: expected an integer" in message


def test_missing_required_key(tmp_path: Path) -> None:
    message = _error(tmp_path, config_text().replace(
        'postal_address = "1 Test Street, Testville"', ""))
    assert "[publication]" in message and "postal_address" in message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Path("/nonexistent/config.toml"))


def test_bad_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in _error(tmp_path, "[publication\nname=1")


def test_invalid_from_address(tmp_path: Path) -> None:
    message = _error(tmp_path, config_text().replace("digest@news.example.org", "not-an-address"))
    assert "from_address" in message and "not a valid email address" in message


def test_secret_in_file_instead_of_a_variable_name(tmp_path: Path) -> None:
    message = _error(tmp_path, config_text(web='base_url = "https://n.example"\n'
                                               'secret_key_env = "s3cr3t-v@lue!"'))
    assert "NAME of an environment variable" in message


def test_missing_secret_names_the_variable(write_config: Callable[..., Path]) -> None:
    settings = load_config(write_config()).with_environ({})
    with pytest.raises(ConfigError) as info:
        settings.secret_key()
    assert "DIGEST_SECRET_KEY is not set" in info.value.message
    assert info.value.hint and "secrets.token_urlsafe" in info.value.hint


def test_short_secret_is_refused(write_config: Callable[..., Path]) -> None:
    settings = load_config(write_config()).with_environ({"DIGEST_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="shorter than"):
        settings.secret_key()


def test_smtp_password_comes_from_the_named_variable(tmp_path: Path) -> None:
    text = config_text().replace("max_connections = 2",
                                 'max_connections = 2\nusername = "u"\npassword_env = "MY_PW"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    settings = load_config(path)
    assert settings.with_environ({"MY_PW": "pw"}).smtp_password() == "pw"
    with pytest.raises(ConfigError, match="MY_PW is not set"):
        settings.with_environ({}).smtp_password()


def test_username_without_password_env(tmp_path: Path) -> None:
    text = config_text().replace("max_connections = 2", 'max_connections = 2\nusername = "u"')
    assert "password_env" in _error(tmp_path, text)


def test_plain_http_base_url_warns(write_config: Callable[..., Path]) -> None:
    settings = load_config(write_config(web='base_url = "http://news.example.org"'))
    assert any("plain http" in w for w in settings.warnings)
    local = load_config(write_config(web='base_url = "http://localhost:8000"'))
    assert local.warnings == ()


def test_bad_cron_and_timezone(tmp_path: Path) -> None:
    assert "expected 5 fields" in _error(
        tmp_path, config_text(extra='[schedule]\ncron = "0 7 * *"\n'))
    assert "unknown timezone" in _error(
        tmp_path, config_text(extra='[schedule]\ncron = "0 7 * * mon"\ntimezone = "Mars/Base"\n'))


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(config_text(feeds=[("Local", "feeds/a.xml")], database="sqlite:///x/d.db"))
    settings = load_config(path)
    assert settings.sources[0].url == (tmp_path / "feeds" / "a.xml").as_uri()
    assert settings.database_url == f"sqlite:///{tmp_path / 'x' / 'd.db'}"


def test_duplicate_source_names(tmp_path: Path) -> None:
    text = config_text(feeds=[("A", "https://a.example/f"), ("A", "https://b.example/f")])
    assert "names must be unique" in _error(tmp_path, text)


def test_bad_colour(tmp_path: Path) -> None:
    assert "#rrggbb" in _error(tmp_path, config_text(extra='[theme]\nbrand_color = "red"\n'))


def test_low_contrast_theme_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, config_text(extra='[theme]\nbrand_color = "#ff9999"\n'))
    assert "[theme] brand_color" in message and "contrast" in message and "4.5:1" in message


def test_contrast_ratio_matches_wcag() -> None:
    from digest.config import contrast_ratio

    assert round(contrast_ratio("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast_ratio("#777777", "#ffffff"), 2) == 4.48


def test_the_templates_fixed_colours_are_readable() -> None:
    import re

    from digest.config import ThemeConfig, contrast_ratio
    from digest.render import PACKAGED_TEMPLATES

    theme = ThemeConfig()
    greys = set()
    for path in PACKAGED_TEMPLATES.rglob("*.mjml.j2"):
        greys |= set(re.findall(r"#[0-9a-fA-F]{6}", path.read_text()))
    for colour in greys - {"#ffffff", "#1c1c1c", "#e6e6e6", "#f0b4b4"}:  # dark-mode palette
        on_white = contrast_ratio(colour, "#ffffff")
        on_page = contrast_ratio(colour, theme.background_color)
        assert min(on_white, on_page) >= 4.5 or colour == theme.background_color, colour
