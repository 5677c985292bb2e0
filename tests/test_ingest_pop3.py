"""End to end over POP3: a real Dovecot maildrop, the whole pipeline, Zendesk faked by
`responses` (tests/zendesk_responses.py validates every request and answer against the OAS).

The test inspects the maildrop through IMAP (same Dovecot user), which never changes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from dovecot import DovecotServer, MailUser
from zendesk_double import error_body
from zendesk_responses import (
    Bridge,
    FakeZendesk,
    account,
    customer_mail,
)

from connector.store.base import MessageState

TICKETS = r"^/api/v2/tickets$"


def maildrop(dovecot: DovecotServer, user: MailUser) -> list[bytes]:
    return [m.raw for m in dovecot.list_folder(user)]


def pop3_session_ends(dovecot: DovecotServer, user: MailUser) -> list[str]:
    """Dovecot's "Logged out" lines of ``user``'s POP3 sessions, once at least one is logged
    (the session process writes it as it exits)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in dovecot.log_text().splitlines()
                 if f"pop3({user.name})" in line and "Logged out" in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_new_mail_becomes_a_ticket_and_is_deleted_after_processing(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Via POP3", "pop1@example.org", pdf=True)
    dovecot.append(mailbox_user, raw)
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=True)])

    summary = bridge.poll()

    assert summary.line() == ("legacy-pop: fetched=1 ticketed=1 followed-up=0 noted=0 "
                              "ignored=0 held=0 failed=0 retry=0")
    [ticket] = zendesk.ticket_list()
    assert ticket["subject"] == "Via POP3"
    assert ticket["tags"] == ["pmb_legacy_pop"]
    assert [a["file_name"] for a in ticket["comments"][0]["attachments"]] == ["modulo.pdf"]
    [record] = bridge.records()
    assert (record.state, record.ticket_id) == (MessageState.DONE, str(ticket["id"]))
    assert maildrop(dovecot, mailbox_user) == []  # DELE committed at QUIT


def test_kept_mail_stays_on_the_server_and_is_not_ticketed_again(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Resta sul server", "pop2@example.org")
    dovecot.append(mailbox_user, raw)
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=False)])

    assert bridge.poll().counts["ticketed"] == 1
    later = customer_mail("Arrivata dopo", "pop3@example.org")
    dovecot.append(mailbox_user, later)
    second = bridge.poll()

    assert (second.counts["fetched"], second.counts["ticketed"]) == (1, 1)
    assert [t["subject"] for t in zendesk.ticket_list()] == ["Resta sul server",
                                                              "Arrivata dopo"]
    third = bridge.poll()
    assert third.counts["fetched"] == 0
    assert len(zendesk.calls_to("POST", TICKETS)) == 2
    assert maildrop(dovecot, mailbox_user) == [raw, later]


def test_failed_mail_stays_on_the_server_and_is_not_retried_forever(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Rifiutata", "pop4@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, 422, body=error_body(
        "RecordInvalid", "Record validation errors",
        {"subject": [{"description": "Subject: is too long", "error": "InvalidValue"}]}))
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=True)])

    first = bridge.poll()

    assert first.counts["failed"] == 1
    [record] = bridge.records()
    assert record.state == MessageState.FAILED
    assert "Subject: is too long" in (record.error or "")
    assert maildrop(dovecot, mailbox_user) == [raw]  # POP3 has no error folder: it stays

    second = bridge.poll()

    assert second.counts["fetched"] == 0
    assert len(zendesk.calls_to("POST", TICKETS)) == 1
    assert zendesk.ticket_list() == []
    assert bridge.records()[0].attempts == 1
    assert maildrop(dovecot, mailbox_user) == [raw]


def test_timeout_keeps_the_mail_and_the_next_poll_tickets_it_once(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Zendesk lento", "pop5@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, exception=requests.ConnectTimeout, count=-1)
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=True)])

    assert bridge.poll().counts["retry"] == 1
    assert maildrop(dovecot, mailbox_user) == [raw]

    zendesk.clear_faults()
    assert bridge.poll().counts["ticketed"] == 1
    assert len(zendesk.ticket_list()) == 1
    assert maildrop(dovecot, mailbox_user) == []


def test_mail_over_max_size_is_never_retrieved_and_stays(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    small = customer_mail("Piccola", "pop6@example.org")
    big = customer_mail("Enorme", "pop7@example.org", padding=20_000)
    dovecot.append(mailbox_user, [small, big])
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=True, max_size="8KB")])

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["failed"]) == (1, 1)
    big_record = next(r for r in bridge.records() if r.state == MessageState.FAILED)
    assert big_record.sha256 is None
    assert f"message too large: {len(big)} bytes" in (big_record.error or "")
    assert maildrop(dovecot, mailbox_user) == [big]
    # Dovecot's own account of the session: one RETR (the small mail), one DELE.
    session_end = pop3_session_ends(dovecot, mailbox_user)
    assert len(session_end) == 1
    assert "retr=1/" in session_end[0] and "del=1/" in session_end[0]
    assert bridge.poll().counts["fetched"] == 0  # and it is not tried again


def test_held_mail_stays_on_the_pop3_server_and_is_not_fetched_again(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    first = customer_mail("Prima", "pop-cap1@example.org")
    second = customer_mail("Seconda", "pop-cap2@example.org")  # same sender, same Date
    dovecot.append(mailbox_user, [first, second])
    bridge = make_bridge([account(dovecot, mailbox_user, "legacy-pop", protocol="pop3",
                                  delete_after_processing=True)],
                         filters={"sender_cap_per_day": 1})

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["held"]) == (1, 1)
    assert maildrop(dovecot, mailbox_user) == [second]  # held: never deleted
    assert [r.state for r in bridge.records()] == [MessageState.DONE, MessageState.HELD]
    again = bridge.poll()
    assert again.counts["fetched"] == 0  # settled: not fetched nor moved again
    assert maildrop(dovecot, mailbox_user) == [second]
