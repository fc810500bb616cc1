"""Locks that die with their holder: one `digest send` per SQLite database, one schedule
daemon per database.

On SQLite the lock is an flock on a file beside the database: the kernel drops it
when the process ends, however it ends (kill -9 included), so a crash never leaves
the next run locked out. On PostgreSQL it is a session advisory lock held on a
connection of its own, which the server drops when the connection goes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from .db import Database
from .errors import LockedError


class ExclusiveLock:
    """Held by one process at a time for one database and one purpose."""

    def __init__(self, db: Database, name: str, what: str) -> None:
        self.db, self.name, self.what = db, name, what
        self._file: int | None = None
        self._conn: Connection | None = None
        self._key = 0

    def _path(self) -> Path | None:
        database = make_url(self.db.url).database
        if not database or database == ":memory:":
            return None
        return Path(f"{database}.{self.name}.lock")

    def acquire(self) -> ExclusiveLock:
        """Take the lock, or raise LockedError naming who holds it."""
        if self.db.is_sqlite:
            path = self._path()
            if path is None:
                return self
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise LockedError(
                    f"another {self.what} is already running on this database "
                    f"(process {holder}); nothing was done",
                    hint="wait for it to finish, or stop it; a process that died releases "
                         "the lock by itself") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._file = fd
            return self
        key = int.from_bytes(hashlib.sha256(f"digest.{self.name}".encode()).digest()[:7], "big")
        self._key = key
        conn = self.db.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise LockedError(f"another {self.what} is already running on this database; "
                              "nothing was done",
                              hint="wait for it to finish, or stop it; a process that died "
                                   "releases the lock with its connection")
        self._conn = conn
        return self

    def release(self) -> None:
        """Give the lock up."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            os.close(self._file)
            self._file = None
        if self._conn is not None:
            # A pooled connection outlives close(): unlock explicitly, then drop it.
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
            self._conn.invalidate()
            self._conn = None

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def send_lock(db: Database) -> ExclusiveLock:
    """One sender per SQLite database (PostgreSQL senders share work through the ledger)."""
    return ExclusiveLock(db, "send", "`digest send`")
