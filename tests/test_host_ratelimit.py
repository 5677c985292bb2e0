"""Client-side pacing (connector/hosts/ratelimit.py): a plan's budget used, no 429s.

The pacer runs on a simulated clock against a model of the host's limit: the strictest reading
of Zendesk's "requests per minute" (any sliding 60-second window), so a pacer that passes here
passes a fixed-window counter too.
"""

from __future__ import annotations

import bisect
import threading

import pytest

from connector.hosts.ratelimit import Rate, RequestPacer


class SimClock:
    """A clock that advances only when the pacer sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlidingWindowHost:
    """Refuses a request when ``limit`` already started in the ``window`` before it."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self.accepted: list[float] = []
        self.refused = 0

    def request(self, at: float) -> bool:
        first = bisect.bisect_right(self.accepted, at - self.window)
        if len(self.accepted) - first >= self.limit:
            self.refused += 1
            return False
        self.accepted.append(at)
        return True


def drive(pacer: RequestPacer, clock: SimClock, host: SlidingWindowHost, seconds: float,
          *, cost: float = 0.0) -> None:
    """One client as fast as the pacer lets it, each request taking ``cost`` seconds."""
    while clock.now < seconds:
        pacer.acquire()
        host.request(clock.now)
        clock.now += cost


@pytest.mark.parametrize("limit", [200, 400, 700, 2500])
def test_the_pacer_uses_at_least_95_percent_of_a_plan_without_a_429(limit: int) -> None:
    clock = SimClock()
    host = SlidingWindowHost(limit)
    pacer = RequestPacer(Rate(limit), clock=clock, sleep=clock.sleep)
    drive(pacer, clock, host, 600.0)
    assert host.refused == 0
    used = len(host.accepted) / (limit * 10)
    assert used >= 0.95, used


def test_without_a_configured_rate_the_host_header_sets_the_pace() -> None:
    clock = SimClock()
    host = SlidingWindowHost(400)
    pacer = RequestPacer(None, clock=clock, sleep=clock.sleep)
    assert pacer.rate is None
    pacer.observe({"X-Rate-Limit": "400", "X-Rate-Limit-Remaining": "399"})
    drive(pacer, clock, host, 300.0)
    assert pacer.rate == Rate(400)
    assert host.refused == 0
    assert len(host.accepted) >= 0.95 * 400 * 5


def test_the_lower_of_configured_and_announced_rates_applies() -> None:
    pacer = RequestPacer(Rate(700))
    pacer.observe({"ratelimit-limit": "400"})
    assert pacer.rate == Rate(400)
    pacer.observe({"ratelimit-limit": "2500"})
    assert pacer.rate == Rate(700)


def test_a_budget_shared_with_other_clients_is_spread_until_the_reset() -> None:
    clock = SimClock()
    pacer = RequestPacer(Rate(700), clock=clock, sleep=clock.sleep)
    pacer.acquire()
    # Another integration used most of the minute: 10 left for the next 30 seconds.
    pacer.observe({"ratelimit-limit": "700", "ratelimit-remaining": "10",
                   "ratelimit-reset": "30"})
    start = clock.now
    pacer.acquire()
    assert clock.now - start == pytest.approx(3.0)


def test_no_budget_left_waits_for_the_reset() -> None:
    clock = SimClock()
    pacer = RequestPacer(Rate(700), clock=clock, sleep=clock.sleep)
    pacer.observe({"ratelimit-remaining": "0", "ratelimit-reset": "12"})
    assert pacer.acquire() == pytest.approx(12.0)


def test_a_retry_after_pauses_the_other_callers() -> None:
    clock = SimClock()
    pacer = RequestPacer(None, clock=clock, sleep=clock.sleep)
    pacer.pause(7.0)
    waited: list[float] = []
    other = threading.Thread(target=lambda: waited.append(pacer.acquire()))
    other.start()
    other.join()
    assert waited == [pytest.approx(7.0)]
    # The caller that met the 429 waits in its own retry loop, not here a second time.
    pacer.pause(7.0)
    assert pacer.acquire() == 0.0


def test_concurrent_callers_share_one_budget() -> None:
    """Eight threads on a real clock, at a rate high enough to finish at once: the slots they
    got are spaced as one caller's would be (counted, not timed)."""
    pacer = RequestPacer(Rate(6000, 1.0))  # 6,000/s: slots 0.17 ms apart
    starts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            pacer.acquire()
            with lock:
                starts.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pacer.requests == len(starts) == 400


def test_a_shutdown_interrupts_a_wait_for_a_slot() -> None:
    from connector.errors import TransientHostError

    stop = threading.Event()
    stop.set()
    pacer = RequestPacer(None, sleep=stop.wait)
    pacer.observe({"ratelimit-remaining": "0", "ratelimit-reset": "60"})
    with pytest.raises(TransientHostError, match="stopped while waiting"):
        pacer.acquire()


@pytest.mark.parametrize("text,rate", [
    (700, Rate(700, 60)), ("700/min", Rate(700, 60)), ("10/s", Rate(10, 1)),
    ("30/10s", Rate(30, 10)), ("2500 / minute", Rate(2500, 60)),
])
def test_rates_are_written_as_admins_write_them(text: object, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["fast", "0/min", "-3/s", True, "700/hour"])
def test_a_rate_that_is_not_one_is_refused(text: object) -> None:
    with pytest.raises(ValueError):
        Rate.parse(text)
