"""The lock-free cached property used by the frozen message and decision models."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from connector.cached import cached_property
from connector.mail.model import ParsedMessage


@dataclass(frozen=True)
class Counted:
    value: int
    calls: list[int]

    @cached_property
    def doubled(self) -> int:
        """Twice the value."""
        self.calls.append(self.value)
        return 2 * self.value


def test_the_value_is_computed_once_per_instance_and_kept_in_its_dict() -> None:
    calls: list[int] = []
    one, two = Counted(1, calls), Counted(2, calls)
    assert (one.doubled, one.doubled, two.doubled, two.doubled) == (2, 2, 4, 4)
    assert calls == [1, 2]
    assert one.__dict__["doubled"] == 2


def test_the_class_attribute_is_the_descriptor_with_the_function_doc() -> None:
    assert isinstance(Counted.doubled, cached_property)
    assert Counted.doubled.__doc__ == "Twice the value."


def test_frozen_dataclass_equality_ignores_cached_values() -> None:
    calls: list[int] = []
    warm = Counted(3, calls)
    assert warm.doubled == 6
    assert warm == Counted(3, calls)


def test_two_instances_compute_at_the_same_time() -> None:
    # functools.cached_property in 3.11 holds one lock per property for every instance: the
    # second thread would wait for the first, which waits for the second.
    first_inside, second_inside = threading.Event(), threading.Event()
    met: list[bool] = []

    @dataclass(frozen=True)
    class Meeting:
        first: bool

        @cached_property
        def meet(self) -> bool:
            mine, other = ((first_inside, second_inside) if self.first
                           else (second_inside, first_inside))
            mine.set()
            met.append(other.wait(timeout=10))
            return True

    threads = [threading.Thread(target=lambda m=Meeting(first): m.meet)
               for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert met == [True, True]


def test_the_message_model_caches_its_hashes() -> None:
    message = ParsedMessage(raw=b"Subject: x\r\n\r\nbody\r\n", subject="x", text_body="body")
    assert message.sha256 == message.__dict__["sha256"]
    assert message.dedupe_key == message.__dict__["dedupe_key"]
