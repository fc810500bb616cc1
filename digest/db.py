"""Engine and sessions from a URL; SQLite pragmas; migrations applied on first use.

SQLite runs in WAL mode with foreign keys on and a busy timeout. pysqlite's own
transaction handling is switched off (SQLAlchemy's documented recipe) so that
digest emits BEGIN itself: write sessions begin with BEGIN IMMEDIATE, which
takes the write lock up front and waits for it, instead of failing half-way
with "database is locked" when two processes write at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000
MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant will do; it only has to be the same for every digest process.
PG_MIGRATION_LOCK = 0x6469676573


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


class Database:
    """One database: an engine, write sessions and read sessions."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_url(url)
        try:
            self.engine: Engine = _make_engine(self.url)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(f"database URL {safe_url(url)} is not usable: {exc}") from None
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._writer = sessionmaker(
            bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a no-op when it already is."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        try:
            with self.engine.connect() as conn:
                if MigrationContext.configure(conn).get_current_revision() == head:
                    return
            immediate = self.engine.execution_options(sqlite_immediate=True)
            with immediate.begin() as conn:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
                # Another process may have migrated while we waited for the lock.
                if MigrationContext.configure(conn).get_current_revision() == head:
                    return
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise DatabaseError(
                f"cannot open database {safe_url(self.url)}: {exc.orig}",
                hint="check [database] url in config.toml and that its folder exists",
            ) from None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot migrate database {safe_url(self.url)}: {exc}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write session: commits on success, rolls back on error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads that must not wait for writers."""
        with self._reader() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
