"""The pool's pacing: the rate cap and the adaptive backoff, on a controlled clock."""

from __future__ import annotations

from digest.deliver.run import Retry
from digest.deliver.smtp import RateLimiter, Throttle


class Clock:
    """A clock that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_sends(monkeypatch: object) -> None:
    import time

    clock = Clock()
    limiter = RateLimiter(4.0, clock=clock)
    monkeypatch.setattr(time, "sleep", clock.sleep)  # type: ignore[attr-defined]
    for _ in range(9):
        limiter.wait()
    assert clock.now - 100.0 == 2.0  # 9 sends at 4/s: the ninth leaves 2 s after the first


def test_no_limit_never_waits() -> None:
    clock = Clock()
    limiter = RateLimiter(0, clock=clock)
    for _ in range(1000):
        limiter.wait()
    assert clock.now == 100.0


def test_throttle_backs_off_doubling_and_recovers() -> None:
    clock = Clock()
    throttle = Throttle(first=1.0, longest=8.0, clock=clock, sleep=clock.sleep)
    throttle.wait()
    assert clock.slept == []
    for expected in (1.0, 2.0, 4.0, 8.0, 8.0):
        throttle.hit()
        assert throttle.delay == expected
        throttle.wait()
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 8.0]
    for expected in (4.0, 2.0, 1.0, 0.0):
        throttle.ok()
        assert throttle.delay == expected
    throttle.wait()
    assert len(clock.slept) == 5


def test_retry_backoff_starts_at_the_first_delay_and_doubles() -> None:
    from datetime import timedelta

    retry = Retry(first=timedelta(seconds=30), longest=timedelta(minutes=5))
    assert [retry.delay(n).total_seconds() for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]
