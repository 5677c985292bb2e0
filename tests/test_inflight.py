"""Several mails at the helpdesk at once (host.max_in_flight), never two of one conversation.

Unit tests drive ``InFlight`` with events; the end-to-end tests go through Dovecot and the
Zendesk fake with a gate in the adapter that only opens when several creates are inside it at
the same time (counted, not timed: a bridge sending one at a time breaks the gate).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from dovecot import DovecotServer, MailUser
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail

from connector.mail.parse import parse_message
from connector.service.inflight import InFlight, conversation_keys

DATA = Path(__file__).parent / "data"


def test_mails_of_different_conversations_run_at_once() -> None:
    gate = threading.Barrier(4, timeout=10)

    def work(item: int) -> int:
        gate.wait()  # only passes when four are inside together
        return item * 2

    with InFlight(work, 4) as flight:
        for n in range(8):
            flight.submit(n, frozenset({f"c{n}"}))
        results = dict(flight.drain())
    assert results == {n: n * 2 for n in range(8)}


def test_a_conversation_is_never_raced_nor_reordered() -> None:
    order: list[int] = []
    inside: set[str] = set()
    lock = threading.Lock()
    raced: list[str] = []
    release = threading.Event()

    def work(item: tuple[str, int]) -> None:
        key, n = item
        with lock:
            if key in inside:
                raced.append(key)
            inside.add(key)
        if n == 0:
            release.wait(5)  # the first of each conversation is slow
        with lock:
            order.append(n) if key == "a" else None
            inside.discard(key)

    with InFlight(work, 4) as flight:
        for n in range(3):
            flight.submit(("a", n), frozenset({"a"}))
        flight.submit(("b", 0), frozenset({"b"}))
        release.set()
        list(flight.drain())
    assert raced == [] and order == [0, 1, 2]


def test_submit_waits_while_the_limit_is_reached() -> None:
    started = threading.Semaphore(0)
    release = threading.Event()
    running: list[int] = []

    def work(item: int) -> int:
        running.append(item)
        started.release()
        release.wait(5)
        return item

    flight: InFlight[int, int] = InFlight(work, 2)
    flight.submit(1, frozenset({"x"}))
    flight.submit(2, frozenset({"y"}))
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    third = threading.Thread(target=flight.submit, args=(3, frozenset({"z"})))
    third.start()
    third.join(0.2)
    assert third.is_alive() and running == [1, 2]  # held back until a slot frees
    release.set()
    third.join(5)
    assert sorted(item for item, _ in flight.drain()) == [1, 2, 3]
    flight.close()


def test_an_error_comes_out_with_its_item_and_the_others_finish() -> None:
    def work(item: int) -> int:
        if item == 2:
            raise RuntimeError("boom")
        return item

    flight: InFlight[int, int] = InFlight(work, 3)
    for n in range(4):
        flight.submit(n, frozenset({f"k{n}"}))
    with pytest.raises(RuntimeError, match="boom"):
        list(flight.drain())
    flight.wait_all()
    flight.close()


def test_a_reply_shares_a_key_with_the_mail_it_answers() -> None:
    question = parse_message(customer_mail("Domanda", "q1@example.org"))
    reply = parse_message(customer_mail("Re: Domanda", "r1@example.org",
                                        sender="Altra <altra@example.net>",
                                        in_reply_to="q1@example.org"))
    other = parse_message(customer_mail("Altro", "o1@example.org",
                                        sender="Terzo <terzo@example.net>"))
    assert conversation_keys(question, ref="1") & conversation_keys(reply, ref="2")
    assert not conversation_keys(question, ref="1") & conversation_keys(other, ref="3")


def test_a_ticket_number_in_the_subject_is_a_conversation() -> None:
    one = parse_message(customer_mail("Re: [#4711] stampante", "a@example.org",
                                      sender="A <a@example.net>"))
    two = parse_message(customer_mail("[#4711] ancora", "b@example.org",
                                      sender="B <b@example.net>"))
    assert conversation_keys(one, ref="1") & conversation_keys(two, ref="2")


# -- end to end --------------------------------------------------------------------------------


def gate_creates(bridge: Bridge, parties: int) -> list[int]:
    """Let creates through only ``parties`` at a time, all inside together; returns the most
    seen inside at once."""
    barrier = threading.Barrier(parties, timeout=20)
    create = bridge.host.create_ticket
    inside = [0]
    most = [0]
    lock = threading.Lock()

    def gated(ticket):  # type: ignore[no-untyped-def]
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            barrier.wait()
            return create(ticket)
        finally:
            with lock:
                inside[0] -= 1

    bridge.host.create_ticket = gated  # type: ignore[method-assign]
    bridge.host.send_prepared = _gated_prepared(bridge, barrier, inside, most, lock)  # type: ignore[method-assign]
    return most


def _gated_prepared(bridge: Bridge, barrier: threading.Barrier, inside: list[int],
                    most: list[int], lock: threading.Lock) -> Callable[..., object]:
    send = bridge.host.send_prepared

    def gated(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            barrier.wait()
            return send(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    return gated


def test_a_pass_sends_several_new_tickets_at_once(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")],
                         host={**_host(), "max_in_flight": 4})
    for n in range(8):
        dovecot.append(mailbox_user, customer_mail(f"Richiesta {n}", f"m{n}@example.org",
                                                   sender=f"Cliente {n} <c{n}@example.org>"))
    most = gate_creates(bridge, 4)

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 8
    assert most[0] == 4
    assert len(zendesk.ticket_list()) == 8
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 8


def test_replies_in_the_same_pass_follow_their_question_in_order(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")],
                         host={**_host(), "max_in_flight": 8})
    for n in range(6):
        who = f"Cliente {n} <c{n}@example.org>"
        dovecot.append(mailbox_user, customer_mail(f"Domanda {n}", f"q{n}@example.org",
                                                   sender=who))
        for r in range(3):
            dovecot.append(mailbox_user, customer_mail(
                f"Re: Domanda {n}", f"q{n}r{r}@example.org", sender=who,
                in_reply_to=f"q{n}@example.org", text=f"seguito {r}\n"))

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["followed_up"]) == (6, 18)
    tickets = zendesk.ticket_list()
    assert len(tickets) == 6
    for ticket in tickets:
        texts = [c["plain"] for c in ticket["comments"][1:]]
        assert texts == ["seguito 0", "seguito 1", "seguito 2"]


def _host() -> dict[str, object]:
    from zendesk_responses import zendesk_host

    return dict(zendesk_host())
