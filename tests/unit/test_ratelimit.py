"""Token buckets: a steady rate, a bounded burst, queueing by reservation, pauses after a 429."""

import pytest

from kolray.tracker.ratelimit import RateLimiter, TokenBucket, endpoint_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_free_then_requests_queue_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0, 0, 0, 0, 0]
    # The next callers are told to wait 0.1 s, 0.2 s, ...: their reservations queue in order.
    assert [round(bucket.reserve(), 6) for _ in range(3)] == [0.1, 0.2, 0.3]


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    for _ in range(5):
        bucket.reserve()
    clock.now += 100  # a long idle spell must not allow more than `burst` at once
    assert [bucket.reserve() for _ in range(5)] == [0] * 5
    assert bucket.reserve() > 0


def test_a_batch_reserves_many_tokens_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=100, clock=clock)
    assert bucket.reserve(100) == 0
    assert bucket.reserve(50) == pytest.approx(0.5)


def test_long_run_rate_is_respected() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=40, burst=10, clock=clock)
    start = clock.now
    last_allowed = start
    for _ in range(1000):
        last_allowed = max(last_allowed, clock.now + bucket.reserve())
    # 1000 requests at 40/s with a burst of 10 take (1000 - 10) / 40 seconds.
    assert last_allowed - start == pytest.approx(990 / 40)


def test_pause_after_429_delays_everyone() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=10, clock=clock)
    bucket.pause(2.0)
    assert bucket.reserve() == pytest.approx(2.1)


def test_limiter_keeps_endpoints_apart_without_revealing_them() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=FakeClock())
    a, b = endpoint_key("https://x.example/?api-key=A"), endpoint_key("https://x.example/?api-key=B")
    assert a != b and "api-key" not in a
    assert limiter.reserve(a) == 0 and limiter.reserve(b) == 0
    assert limiter.reserve(a) == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_bucket_parameters_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate=rate, burst=burst)
