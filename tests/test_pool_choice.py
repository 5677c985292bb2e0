"""Whether mails go to the helpdesk several at once or one at a time: chosen by measured rates
(connector.service.pool_choice), on a clock the tests move themselves."""

from __future__ import annotations

import threading

from connector.service.inflight import InFlight
from connector.service.pool_choice import (
    EARLY,
    HOLD_SECONDS,
    MAX_HOLD_SECONDS,
    WINDOW,
    Mode,
    PoolChoice,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_window(choice: PoolChoice, clock: Clock, seconds_per_mail: float) -> None:
    """One pool window: WINDOW mails submitted, then their results collected."""
    for _ in range(WINDOW):
        choice.pool_submitted()
    clock.now += WINDOW * seconds_per_mail
    for _ in range(WINDOW):
        choice.pool_finished()


def inline_mails(choice: PoolChoice, clock: Clock, count: int, seconds: float) -> None:
    for _ in range(count):
        clock.now += seconds
        choice.inline_finished(seconds)


def chosen_one_at_a_time() -> tuple[Clock, PoolChoice]:
    """A choice that measured the pool at 200 mails/s and one at a time at 250: one at a time."""
    clock = Clock()
    choice = PoolChoice(clock=clock)
    pool_window(choice, clock, 0.005)
    inline_mails(choice, clock, WINDOW, 0.004)
    assert choice.inline
    return clock, choice


def test_a_helpdesk_that_answers_at_once_gets_one_mail_at_a_time() -> None:
    clock = Clock()
    choice = PoolChoice(clock=clock)
    assert choice.mode is Mode.POOL  # a slow helpdesk is not made to wait for the measure
    pool_window(choice, clock, 0.005)  # the pool: 200 mails/s
    assert choice.mode is Mode.INLINE  # now one at a time is measured
    inline_mails(choice, clock, WINDOW, 0.0046)  # 217 mails/s: at least as fast
    assert choice.inline and choice.inline_rate is not None
    assert "inline" in choice.describe() and "200 mails/s" in choice.describe()


def test_a_slow_helpdesk_keeps_the_pool_and_the_trial_stops_early() -> None:
    clock = Clock()
    choice = PoolChoice(clock=clock)
    pool_window(choice, clock, 0.02)  # eight at once against 150 ms: 50 mails/s
    assert choice.mode is Mode.INLINE
    inline_mails(choice, clock, EARLY - 1, 0.16)
    assert choice.mode is Mode.INLINE  # too few to judge
    inline_mails(choice, clock, 1, 0.16)  # 6 mails/s: clearly slower, stopped after EARLY
    assert choice.mode is Mode.POOL
    # ... and the pool stands: more windows do not start another trial before the hold is over.
    pool_window(choice, clock, 0.02)
    assert choice.mode is Mode.POOL


def test_one_at_a_time_a_little_slower_than_the_pool_loses_the_trial() -> None:
    clock = Clock()
    choice = PoolChoice(clock=clock)
    pool_window(choice, clock, 0.005)  # 200 mails/s
    inline_mails(choice, clock, WINDOW, 0.006)  # 167 mails/s: below 90 % of the pool
    assert choice.mode is Mode.POOL


def test_the_choice_is_measured_again_after_the_hold() -> None:
    clock, choice = chosen_one_at_a_time()
    clock.now += HOLD_SECONDS
    # The helpdesk became slow: one at a time now takes 150 ms a mail.
    inline_mails(choice, clock, WINDOW, 0.15)
    assert choice.mode is Mode.POOL  # the hold is over: the pool is tried
    pool_window(choice, clock, 0.02)
    assert choice.mode is Mode.INLINE  # ... against one at a time, measured again
    inline_mails(choice, clock, EARLY, 0.15)
    assert choice.mode is Mode.POOL and choice.pool_rate is not None
    assert round(choice.pool_rate) == 50


def test_inflight_switches_to_the_callers_thread_and_keeps_order() -> None:
    """Through InFlight: once the choice is one at a time, the work runs on the submitting
    thread, after every mail still in the pool, and the results still all come out."""
    choice = PoolChoice()
    ran_on: list[tuple[int, str]] = []
    release = threading.Event()

    def work(item: int) -> int:
        if item == 0:
            release.wait(5)  # the pool's mail is still at the helpdesk at the switch
        ran_on.append((item, threading.current_thread().name))
        return item

    with InFlight(work, 4, choice=choice, name="pool") as flight:
        flight.submit(0, frozenset({"a"}))
        choice.mode = Mode.INLINE  # as after a won trial
        timer = threading.Timer(0.2, release.set)
        timer.start()
        flight.submit(1, frozenset({"a"}))  # waits for mail 0, then runs here
        results = dict(flight.drain())
    assert results == {0: 0, 1: 1}
    assert [item for item, _ in ran_on] == [0, 1]
    assert ran_on[0][1].startswith("pool") and ran_on[1][1] == threading.current_thread().name


def test_a_helpdesk_that_slows_down_brings_the_pool_back_before_the_hold_is_over() -> None:
    clock, choice = chosen_one_at_a_time()
    inline_mails(choice, clock, WINDOW, 0.2)  # 5 mails/s against the pool's 200
    assert choice.mode is Mode.POOL


def test_a_confirmed_choice_is_checked_less_and_less_often() -> None:
    """Against a slow helpdesk every trial of one at a time costs a few slow mails: each
    confirmation doubles the time to the next, up to MAX_HOLD_SECONDS."""
    clock = Clock()
    choice = PoolChoice(clock=clock)
    starts: list[float] = []
    while len(starts) < 7:
        pool_window(choice, clock, 0.02)  # 0.96 s a window
        if choice.mode is Mode.INLINE:  # a trial of one at a time began
            starts.append(clock.now)
            inline_mails(choice, clock, EARLY, 0.16)  # 1.28 s, clearly slower
            assert choice.mode is Mode.POOL
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    holds = [HOLD_SECONDS * 2**n for n in range(5)] + [MAX_HOLD_SECONDS]
    assert holds[-2] == MAX_HOLD_SECONDS
    for gap, hold in zip(gaps, holds, strict=True):
        assert hold + 1.28 <= gap <= hold + 1.28 + 0.96 + 1e-6
