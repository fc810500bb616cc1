"""A send rate shared by every sender of one database: [smtp] rate_per_second holds for
the whole installation, however many `digest worker` processes run."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .db import Database
from .queries.rates import reserve


class SharedRateLimiter:
    """Hands out send slots reserved from the database in small blocks."""

    def __init__(self, db: Database, per_second: float, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.db, self.per_second, self.clock, self.sleep = db, per_second, clock, sleep
        # A quarter of a second's worth at a time: few transactions, little waste at the end.
        self.block = max(1, int(per_second / 4))
        self._slots: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this sender's next slot."""
        with self._lock:
            if not self._slots:
                with self.db.session() as session:
                    start = reserve(session, self.block, self.per_second, self.clock())
                self._slots.extend(start + i / self.per_second for i in range(self.block))
            at = self._slots.popleft()
        delay = at - self.clock()
        if delay > 0:
            self.sleep(delay)
