"""Shared fixtures: real servers on loopback (SMTP, HTTP), real SQLite files, configs."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from digest.app import Context
from digest.config import Settings, load_config
from digest.deliver.sink import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SECRET = "test-secret-0123456789-abcdefghij"


def config_text(
    *,
    feeds: list[tuple[str, str]] | None = None,
    smtp_port: int = 25,
    database: str = "sqlite:///digest.db",
    extra: str = "",
    digest: str = "",
    web: str = 'base_url = "https://news.example.org"',
    smtp: str = "",
) -> str:
    """A small valid config.toml; pieces can be swapped per test."""
    sources = "".join(
        f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\n' for name, url in (feeds or [])
    )
    return f"""
[publication]
name = "The Test Review"
url = "https://news.example.org/"
from_address = "digest@news.example.org"
postal_address = "1 Test Street, Testville"

[database]
url = "{database}"
{sources}
[digest]
window_days = 7
{digest}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
max_connections = 2
{smtp}

[web]
{web}
{extra}
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config.toml into the test's folder and return its path."""

    def write(text: str | None = None, **kwargs: Any) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text if text is not None else config_text(**kwargs), encoding="utf-8")
        return path

    return write


@pytest.fixture
def environ() -> dict[str, str]:
    """An environment holding the signing secret."""
    return {"DIGEST_SECRET_KEY": SECRET}


@pytest.fixture
def make_context(write_config: Callable[..., Path], environ: dict[str, str]) -> Iterator[
    Callable[..., Context]
]:
    """Build a Context over a fresh SQLite file from config pieces."""
    made: list[Context] = []

    def make(**kwargs: Any) -> Context:
        settings: Settings = load_config(write_config(**kwargs)).with_environ(environ)
        ctx = Context(settings)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping .eml files."""
    with SmtpSink(tmp_path / "outbox") as sink:
        yield sink


# -- a real HTTP server for feeds ------------------------------------------------------------

@dataclass
class Route:
    """How the test server answers one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    endless: bool = False
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FeedServer:
    """A threaded HTTP server on loopback whose answers the test sets per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._get()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _get(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(self.path)
                if route is None:
                    self._send(404, b"not found", "text/plain")
                    return
                if route.delay:
                    time.sleep(route.delay)
                if route.location:
                    self.send_response(route.status)
                    self.send_header("Location", route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.endless:
                    self.send_response(200)
                    self.send_header("Content-Type", route.content_type)
                    self.end_headers()
                    chunk = b"<rss>" + b"x" * 65536
                    try:
                        while True:
                            self.wfile.write(chunk)
                    except OSError:
                        return
                extra = dict(route.headers)
                if route.etag:
                    extra["ETag"] = route.etag
                if route.last_modified:
                    extra["Last-Modified"] = route.last_modified
                self._send(route.status, route.body, route.content_type, extra)

            def _send(self, status: int, body: bytes, ctype: str,
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The absolute URL of a path on this server."""
        return self.base + path

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A real HTTP server on a free loopback port."""
    server = FeedServer()
    yield server
    server.close()


# -- running the real command ------------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    """A finished `digest` process."""

    code: int
    out: str
    err: str


def run_digest(*args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 120) -> Ran:
    """Run `python -m digest ARGS` as a real process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "digest", *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def read_data(name: str) -> bytes:
    """A file under tests/data."""
    return (DATA / name).read_bytes()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the golden files under tests/data from the current output")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with a golden file under tests/data (or rewrite it with --update-golden)."""

    def check(name: str, actual: str) -> None:
        path = DATA / name
        if request.config.getoption("--update-golden") or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            if not request.config.getoption("--update-golden"):
                pytest.fail(f"golden file {name} did not exist; written, check it and rerun")
        assert actual == path.read_text(encoding="utf-8"), f"output differs from {name}"

    return check


# -- the web app on a real server ------------------------------------------------------------------

class WebServer:
    """digest's web app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, ctx: Context, port: int | None = None) -> None:
        import uvicorn

        from digest.web import create_app

        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the web app did not start")
            time.sleep(0.02)

    def url(self, path: str) -> str:
        """The absolute URL of a path."""
        return self.base + path

    def close(self) -> None:
        """Stop the server."""
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def web_server() -> Iterator[Callable[..., WebServer]]:
    """Start the web app for a context; stopped after the test."""
    started: list[WebServer] = []

    def start(ctx: Context, port: int | None = None) -> WebServer:
        server = WebServer(ctx, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# -- PostgreSQL ------------------------------------------------------------------------------------

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no server here"
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the machine's PostgreSQL, dropped afterwards."""
    if not postgres_available():
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432 (user postgres, db test)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


