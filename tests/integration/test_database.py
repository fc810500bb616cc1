"""The database layer on a real SQLite file and, where it answers, the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from digest.db import Database
from digest.models import Base


def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    db.dispose()


def _assert_schema_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_migrations_create_exactly_the_models_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    _assert_schema_matches_models(db)
    db.migrate()  # a second run changes nothing
    db.dispose()


def test_unopenable_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    from digest.errors import DatabaseError

    with pytest.raises(DatabaseError, match="cannot open database"):
        Database(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'd.db'}")


@pytest.mark.postgres
def test_migrations_create_exactly_the_models_on_postgresql(pg_url: str) -> None:
    db = Database(pg_url)
    _assert_schema_matches_models(db)
    db.migrate()
    db.dispose()
