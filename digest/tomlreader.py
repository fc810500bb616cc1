"""Reading one TOML table at a time, so that every mistake names its file, line and key.

config.py declares what the keys are; this module knows how to read them: types,
bounds, e-mail addresses, URLs, colours, environment-variable names, and the keys
nobody asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from .errors import ConfigError

T = TypeVar("T")


class Document:
    """The config text, to point errors at the line that holds a key."""

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: tuple[str | int, ...], key: str | None) -> int | None:
        """1-based line of ``key`` in ``table`` (or of the table header), if it can be found."""
        names = [p for p in table if isinstance(p, str)]
        want_index = next((p for p in table if isinstance(p, int)), None)
        current: list[str] = []
        counts: dict[str, int] = {}
        header_line = None
        for number, line in enumerate(self.lines, 1):
            m = self._header.match(line)
            if m:
                current = m.group(2).split(".")
                name = m.group(2)
                if m.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                if current == names and (want_index is None or counts.get(name) == want_index):
                    header_line = number
                    if key is None:
                        return number
                continue
            if header_line is not None and current == names and key is not None:
                if want_index is not None and counts.get(".".join(names)) != want_index:
                    continue
                if re.match(rf"^\s*{re.escape(key)}\s*=", line):
                    return number
        if not names and key is not None:
            for number, line in enumerate(self.lines, 1):
                if self._header.match(line):
                    break
                if re.match(rf"^\s*{re.escape(key)}\s*=", line):
                    return number
        return header_line


class Table:
    """One TOML table being read; remembers which keys were used so leftovers can be named."""

    def __init__(self, doc: Document, data: dict[str, Any], where: tuple[str | int, ...]) -> None:
        self.doc = doc
        self.data = data
        self.where = where
        self.used: set[str] = set()

    # -- naming --------------------------------------------------------------------
    def label(self, key: str | None = None) -> str:
        names = [p for p in self.where if isinstance(p, str)]
        index = next((p for p in self.where if isinstance(p, int)), None)
        table = ""
        if names:
            table = f"[[{'.'.join(names)}]] #{index + 1}" if index is not None else (
                f"[{'.'.join(names)}]"
            )
        if key is None:
            return table or "top level"
        return f"{table} {key}".strip()

    def fail(self, key: str | None, reason: str) -> Any:
        line = self.doc.line_of(self.where, key)
        at = f"{self.doc.path}:{line}" if line else str(self.doc.path)
        raise ConfigError(f"{at}: {self.label(key)}: {reason}")

    # -- structure -----------------------------------------------------------------
    def table(self, key: str, *, required: bool = False) -> Table:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(None, f"missing required table [{key}]")
            value = {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a table [{key}], got {_kind(value)}")
        return Table(self.doc, value, (*self.where, key))

    def tables(self, key: str) -> Iterator[Table]:
        self.used.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"expected [[{key}]] tables, got {_kind(value)}")
        for index, item in enumerate(value):
            yield Table(self.doc, item, (*self.where, key, index))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            key = unknown[0]
            known = ", ".join(sorted(self.used)) or "none"
            self.fail(key, f"unknown key {key!r} (known keys here: {known})")

    # -- scalars -------------------------------------------------------------------
    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.fail(None, f"missing required key {key!r}")
            return None
        return self.data[key]

    def text(self, key: str, *, default: Any = None, required: bool = False) -> Any:
        value = self._get(key, required)
        if value is None:
            return default
        return self.text_value(key, value)

    def text_value(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_kind(value)}")
        if not value.strip():
            self.fail(key, "must not be empty")
        return str(value.strip())

    def choice(self, key: str, options: tuple[str, ...], *, default: str) -> str:
        value = self.text(key, default=default)
        if value not in options:
            self.fail(key, f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    def integer(self, key: str, *, default: int, minimum: int | None = None,
            maximum: int | None = None) -> int:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_kind(value)}")
        self._bounds(key, value, minimum, maximum)
        return int(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_kind(value)}")
        return bool(value)

    def number(self, key: str, *, default: Any, minimum: float | None = None) -> Any:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_kind(value)}")
        self._bounds(key, value, minimum, None)
        return float(value)

    def _bounds(self, key: str, value: float, minimum: float | None,
                maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            self.fail(key, f"expected at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"expected at most {maximum}, got {value}")

    def url(self, key: str, *, default: Any = None, required: bool = False) -> Any:
        value = self.text(key, default=default, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.fail(key, f"expected an absolute http(s) URL, got {value!r}")
        return value

    def email(self, key: str, *, required: bool = False) -> Any:
        value = self._get(key, required)
        return None if value is None else self.email_value(key, value)

    def email_value(self, key: str, value: Any) -> str:
        text = self.text_value(key, value)
        try:
            checked = validate_email(text, check_deliverability=False)
        except EmailNotValidError as exc:
            self.fail(key, f"{text!r} is not a valid email address: {exc}")
        return str(checked.normalized)

    def color(self, key: str, *, default: str) -> str:
        """A #rrggbb colour."""
        value = str(self.text(key, default=default))
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            self.fail(key, f"expected a colour as #rrggbb, got {value!r}")
        return value.lower()

    def env_name(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            self.fail(key, f"expected the NAME of an environment variable, got {value!r} "
                      "(put the secret itself in the environment, never in this file)")
        return value  # type: ignore[no-any-return]

    def mapping(self, key: str) -> dict[str, str]:
        """A table of string → string (e.g. section aliases)."""
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a table of names, got {_kind(value)}")
        return {str(k): self.text_value(f"{key}.{k}", v) for k, v in value.items()}

    def each(self, key: str, convert: Callable[[str, Any], T]) -> list[T]:
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {_kind(value)}")
        return [convert(key, item) for item in value]


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a table"}
    text = names.get(type(value), type(value).__name__)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"{text} ({value!r})"
    return text
