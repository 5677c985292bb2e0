"""End to end over IMAP: a real Dovecot mailbox, the whole pipeline, Zendesk faked by
`responses` (tests/zendesk_responses.py validates every request and answer against the OAS).

Each test writes a config file, builds the bridge from it as `run` does and polls.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from dovecot import CuttingProxy, DovecotServer, MailUser
from zendesk_double import error_body
from zendesk_responses import (
    PDF,
    PNG,
    Bridge,
    FakeZendesk,
    account,
    customer_mail,
)

from connector.config import AccountConfig
from connector.fetch.imap import ImapMailbox, QuietIMAPClient
from connector.mail.parse import parse_message
from connector.store.base import MessageState

TICKETS = r"^/api/v2/tickets$"


@pytest.fixture(scope="module")
def dovecot_without_move() -> Iterator[DovecotServer]:
    """A Dovecot that does not advertise MOVE (UIDPLUS still there)."""
    with DovecotServer(drop_imap_capabilities=["MOVE"]) as server:
        yield server


class RecordingClient(QuietIMAPClient):
    """Records body downloads and the commands that move mail, to prove which path ran."""

    log: list[tuple[str, list[int]]] = []

    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> Any:
        if any("BODY" in str(item).upper() for item in data):
            RecordingClient.log.append(("fetch-body", list(messages)))
        return super().fetch(messages, data, modifiers)

    def move(self, messages: Any, folder: str) -> Any:
        RecordingClient.log.append(("move", list(messages)))
        return super().move(messages, folder)

    def copy(self, messages: Any, folder: str) -> Any:
        RecordingClient.log.append(("copy", list(messages)))
        return super().copy(messages, folder)

    def uid_expunge(self, messages: Any) -> Any:
        RecordingClient.log.append(("uid-expunge", list(messages)))
        return super().uid_expunge(messages)


@pytest.fixture
def recording() -> Iterator[Callable[[AccountConfig], ImapMailbox]]:
    RecordingClient.log = []
    yield lambda acc: ImapMailbox(acc, client_class=RecordingClient)


def external_id(raw: bytes) -> str:
    return f"pmb-{parse_message(raw).dedupe_key}"[:64]


def raws(dovecot: DovecotServer, user: MailUser, folder: str = "INBOX") -> list[bytes]:
    return [m.raw for m in dovecot.list_folder(user, folder)]


def wait_for_log(dovecot: DovecotServer, *parts: str) -> None:
    """Until Dovecot logged a line containing every one of ``parts`` (it logs a session's end
    once the session process is gone)."""
    deadline = time.monotonic() + 10
    while not any(all(p in line for p in parts) for line in dovecot.log_text().splitlines()):
        assert time.monotonic() < deadline, f"Dovecot never logged {parts}"
        time.sleep(0.02)


# -- a new mail ---------------------------------------------------------------------------------


def test_new_mail_becomes_one_ticket_and_leaves_the_inbox(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Richiesta modulo", "m1@example.org", inline_png=True, pdf=True,
                        to="support@example.com, Anna Bianchi <anna@example.org>")
    dovecot.append(mailbox_user, raw)
    assert "Processed" not in dovecot.folders(mailbox_user)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.line() == ("support: fetched=1 ticketed=1 followed-up=0 noted=0 ignored=0 "
                              "held=0 failed=0 retry=0")
    [ticket] = zendesk.ticket_list()
    requester = zendesk.user(ticket["requester_id"])
    assert (requester["email"], requester["name"]) == ("mario.rossi@example.org", "Mario Rossi")
    assert ticket["subject"] == "Richiesta modulo"
    assert "pmb_support" in ticket["tags"]
    assert ticket["external_id"] == external_id(raw)
    assert [zendesk.user(u)["email"] for u in ticket["email_cc_ids"]] == ["anna@example.org"]
    [comment] = ticket["comments"]
    assert comment["public"] is True
    assert "scrivo per: Richiesta modulo." in comment["plain"]
    # Both files were uploaded, one token each; the inline image is shown from Zendesk.
    files = {a["content_type"]: a for a in comment["attachments"]}
    assert files["application/pdf"]["data"] == PDF
    assert files["application/pdf"]["file_name"] == "modulo.pdf"
    assert files["image/png"]["data"] == PNG
    assert "cid:" not in comment["html_body"]
    assert f"/attachments/token/{files['image/png']['token']}/" in comment["html_body"]
    assert len(zendesk.calls_to("POST", r"^/api/v2/uploads$")) == 2
    [create] = zendesk.calls_to("POST", TICKETS)
    assert create.headers["Idempotency-Key"] == f"pmb-{parse_message(raw).dedupe_key}"
    # The ledger holds the effect, the mail moved byte-exact to the created Processed folder.
    [record] = bridge.records()
    assert (record.state, record.action, record.ticket_id) == (
        MessageState.DONE, "new_ticket", str(ticket["id"]))
    assert dovecot.list_folder(mailbox_user) == []
    assert raws(dovecot, mailbox_user, "Processed") == [raw]
    assert {"Processed", "Error"} <= dovecot.folders(mailbox_user)


# -- replies ------------------------------------------------------------------------------------


def first_ticket(dovecot: DovecotServer, user: MailUser, zendesk: FakeZendesk,
                 bridge: Bridge) -> dict[str, Any]:
    dovecot.append(user, customer_mail("Richiesta modulo", "m1@example.org"))
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = zendesk.ticket_list()
    return ticket


def test_reply_is_a_public_comment_with_the_follow_up_policy(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  follow_up={"status": "open", "priority": "high"})])
    ticket = first_ticket(dovecot, mailbox_user, zendesk, bridge)
    reply = customer_mail("Re: Richiesta modulo", "m2@example.org", in_reply_to="m1@example.org",
                          text="Ecco il modulo firmato.\n", pdf=True)
    dovecot.append(mailbox_user, reply)

    summary = bridge.poll()

    assert (summary.counts["fetched"], summary.counts["followed_up"]) == (1, 1)
    assert len(zendesk.ticket_list()) == 1
    assert (ticket["status"], ticket["priority"]) == ("open", "high")
    first, second = ticket["comments"]
    assert second["public"] is True
    assert second["plain"] == "Ecco il modulo firmato."
    assert second["author_id"] == ticket["requester_id"]  # written as the customer
    assert [a["data"] for a in second["attachments"]] == [PDF]
    assert second["metadata"] == {"pmb_key": f"pmb-{parse_message(reply).dedupe_key}"}
    assert dovecot.list_folder(mailbox_user) == []
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 2
    assert bridge.records()[-1].action == "follow_up"


def test_ticket_number_in_the_subject_without_threading_headers(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    ticket = first_ticket(dovecot, mailbox_user, zendesk, bridge)
    dovecot.append(mailbox_user, customer_mail(f"R: [#{ticket['id']}] Richiesta modulo",
                                               "other-client-77@example.org",
                                               text="Avete ricevuto il modulo?\n"))

    summary = bridge.poll()

    assert summary.counts["followed_up"] == 1
    assert len(zendesk.ticket_list()) == 1
    assert [c["plain"] for c in ticket["comments"]][1] == "Avete ricevuto il modulo?"
    assert ticket["comments"][1]["public"] is True
    assert dovecot.list_folder(mailbox_user) == []


def test_reply_to_a_closed_ticket_opens_a_follow_up_ticket(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    closed = first_ticket(dovecot, mailbox_user, zendesk, bridge)
    zendesk.set_status(closed["id"], "closed")
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta modulo", "m2@example.org",
                                               in_reply_to="m1@example.org"))

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    old, new = zendesk.ticket_list()
    assert len(old["comments"]) == 1  # a closed ticket takes no comment
    assert new["via_followup_source_id"] == closed["id"]
    assert new["subject"] == "Richiesta modulo"
    assert new["requester_id"] == old["requester_id"]
    assert bridge.records()[-1].ticket_id == str(new["id"])


def test_reply_from_a_cc_is_public_and_from_a_stranger_is_an_internal_note(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    dovecot.append(mailbox_user, customer_mail(
        "Richiesta modulo", "m1@example.org",
        to="support@example.com, Anna Bianchi <anna@example.org>"))
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = zendesk.ticket_list()
    dovecot.append(mailbox_user, [
        customer_mail("Re: Richiesta modulo", "cc1@example.org", in_reply_to="m1@example.org",
                      sender="Anna Bianchi <anna@example.org>", text="Confermo anch'io.\n"),
        customer_mail("Re: Richiesta modulo", "x9@other.example",
                      sender="Luigi Verdi <luigi@other.example>", in_reply_to="m1@example.org",
                      text="Sono il collega di Mario.\n")])

    summary = bridge.poll()

    assert (summary.counts["followed_up"], summary.counts["noted"]) == (1, 1)
    from_cc = ticket["comments"][1]
    assert from_cc["public"] is True
    assert zendesk.user(from_cc["author_id"])["email"] == "anna@example.org"
    note = ticket["comments"][2]
    assert note["public"] is False
    assert note["author_id"] == 100  # the integration user, not the stranger
    assert note["plain"].startswith("Mail from Luigi Verdi <luigi@other.example>")
    assert "Sono il collega di Mario." in note["plain"]
    assert [r.action for r in bridge.records()] == ["new_ticket", "follow_up", "internal_note"]
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 3


# -- the same mail more than once ---------------------------------------------------------------


def test_same_mail_twice_in_the_inbox_makes_one_ticket(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Doppio invio", "dup@example.org", pdf=True)
    dovecot.append(mailbox_user, [raw, raw])
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["duplicate"]) == (1, 1)
    [ticket] = zendesk.ticket_list()
    assert [r.ticket_id for r in bridge.records()] == [str(ticket["id"])] * 2
    assert dovecot.list_folder(mailbox_user) == []
    assert raws(dovecot, mailbox_user, "Processed") == [raw, raw]


def test_same_mail_in_two_accounts_makes_one_ticket(
    dovecot: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    support, sales = dovecot.add_user(), dovecot.add_user()
    raw = customer_mail("A tutti gli uffici", "both@example.org",
                        to="support@example.com, sales@example.com")
    dovecot.append(support, raw)
    dovecot.append(sales, raw)
    bridge = make_bridge([account(dovecot, support, "support"),
                          account(dovecot, sales, "sales",
                                  own_addresses=["sales@example.com"])])

    summaries = bridge.service().run_once()

    assert [(s.account, s.counts["ticketed"], s.counts["duplicate"]) for s in summaries] == [
        ("support", 1, 0), ("sales", 0, 1)]
    [ticket] = zendesk.ticket_list()
    assert ticket["tags"] == ["pmb_support"]
    assert dovecot.list_folder(support) == dovecot.list_folder(sales) == []
    assert raws(dovecot, sales, "Processed") == [raw]


# -- Zendesk failures ---------------------------------------------------------------------------


def test_permanent_422_sends_the_mail_to_the_error_folder(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Rifiutata", "bad@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, 422, body=error_body(
        "RecordInvalid", "Record validation errors",
        {"requester": [{"description": "Requester: Email is not properly formatted",
                        "error": "InvalidValue"}]}))
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.counts["failed"] == 1
    assert zendesk.ticket_list() == []
    [record] = bridge.records()
    assert record.state == MessageState.FAILED
    assert "HTTP 422" in (record.error or "")
    assert "Requester: Email is not properly formatted" in (record.error or "")
    assert dovecot.list_folder(mailbox_user) == []
    assert raws(dovecot, mailbox_user, "Error") == [raw]
    assert dovecot.list_folder(mailbox_user, "Processed") == []
    assert len(zendesk.calls_to("POST", TICKETS)) == 1  # a 422 is not retried


def test_server_error_then_success_makes_one_ticket(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    dovecot.append(mailbox_user, customer_mail("Errore 500", "e500@example.org"))
    zendesk.fail("POST", TICKETS, 500)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    assert len(zendesk.ticket_list()) == 1
    first, second = zendesk.calls_to("POST", TICKETS)
    assert (first.status, second.status) == (500, 201)
    assert first.body == second.body  # resent byte for byte
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 1


def test_answer_lost_after_the_ticket_was_created_is_replayed_not_duplicated(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    dovecot.append(mailbox_user, customer_mail("Risposta persa", "lost@example.org", pdf=True))
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, after=True)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    [ticket] = zendesk.ticket_list()
    lost, replay = zendesk.calls_to("POST", TICKETS)
    assert lost.status is None and replay.status == 201
    assert lost.body == replay.body
    assert len(zendesk.calls_to("POST", r"^/api/v2/uploads$")) == 1  # not uploaded again
    assert bridge.records()[0].ticket_id == str(ticket["id"])


def test_lost_answer_to_a_comment_does_not_add_it_twice(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    ticket = first_ticket(dovecot, mailbox_user, zendesk, bridge)
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta modulo", "m2@example.org",
                                               in_reply_to="m1@example.org"))
    zendesk.fail("PUT", r"^/api/v2/tickets/\d+$", exception=requests.ReadTimeout, after=True)

    summary = bridge.poll()

    assert summary.counts["followed_up"] == 1
    assert len(ticket["comments"]) == 2
    assert len(zendesk.calls_to("PUT", r"^/api/v2/tickets/\d+$")) == 1
    assert zendesk.calls_to("GET", rf"^/api/v2/tickets/{ticket['id']}/audits$")
    assert dovecot.list_folder(mailbox_user) == []


def test_outage_longer_than_the_idempotency_window_finds_the_ticket_by_external_id(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Durante il guasto", "outage@example.org")
    dovecot.append(mailbox_user, raw)
    # The first attempt creates the ticket but its answer is lost; then Zendesk is unreachable.
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, after=True)
    zendesk.fail("POST", TICKETS, exception=requests.ConnectTimeout, count=-1)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    assert bridge.poll().counts["retry"] == 1
    assert len(zendesk.ticket_list()) == 1
    assert raws(dovecot, mailbox_user) == [raw]

    zendesk.clear_faults()
    zendesk.advance(3 * 3600)  # Zendesk has forgotten the Idempotency-Key
    bridge.wall_offset = 3 * 3600
    posts_before = len(zendesk.calls_to("POST", TICKETS))
    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    [ticket] = zendesk.ticket_list()
    assert len(zendesk.calls_to("POST", TICKETS)) == posts_before  # not sent again
    [lookup] = zendesk.calls_to("GET", TICKETS)
    assert lookup.query["external_id"] == external_id(raw)
    assert bridge.records()[0].ticket_id == str(ticket["id"])
    assert raws(dovecot, mailbox_user, "Processed") == [raw]


def test_rate_limit_waits_for_retry_after(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    dovecot.append(mailbox_user, customer_mail("Troppe richieste", "r429@example.org"))
    zendesk.fail("POST", TICKETS, 429, headers={"Retry-After": "7"}, body=error_body(
        "APIRateLimitExceeded", "Number of allowed API requests per minute exceeded"))
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    assert bridge.sleeps == [7.0]
    assert [c.status for c in zendesk.calls_to("POST", TICKETS)] == [429, 201]
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 1


def test_retry_after_longer_than_the_backoff_cap_leaves_the_mail_for_a_later_poll(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Aspetta due minuti", "r429long@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, 429, headers={"Retry-After": "120"}, body=error_body(
        "APIRateLimitExceeded", "Number of allowed API requests per minute exceeded"))
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    first = bridge.poll()

    assert first.counts["retry"] == 1
    assert bridge.sleeps == []  # not waited out in-process
    assert raws(dovecot, mailbox_user) == [raw]
    second = bridge.poll()
    assert second.counts["ticketed"] == 1
    assert len(zendesk.ticket_list()) == 1
    assert dovecot.list_folder(mailbox_user) == []


def test_timeouts_on_every_attempt_leave_the_mail_for_the_next_poll(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Zendesk lento", "slow@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, count=-1)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])

    summary = bridge.poll()

    assert summary.line() == ("support: fetched=1 ticketed=0 followed-up=0 noted=0 ignored=0 "
                              "held=0 failed=0 retry=1")
    assert len(zendesk.calls_to("POST", TICKETS)) == 3  # host.max_attempts
    assert zendesk.ticket_list() == []
    assert raws(dovecot, mailbox_user) == [raw]
    assert dovecot.list_folder(mailbox_user, "Error") == []
    [record] = bridge.records()
    assert record.state == MessageState.PUSHING
    assert "timed out" in (record.error or "")

    zendesk.clear_faults()
    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1
    [ticket] = zendesk.ticket_list()
    keys = {c.headers["Idempotency-Key"] for c in zendesk.calls_to("POST", TICKETS)}
    assert keys == {f"pmb-{parse_message(raw).dedupe_key}"}
    assert dovecot.list_folder(mailbox_user) == []
    assert raws(dovecot, mailbox_user, "Processed") == [raw]
    assert bridge.records()[0].ticket_id == str(ticket["id"])


def test_comment_timing_out_on_every_attempt_is_added_once_on_the_next_poll(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    ticket = first_ticket(dovecot, mailbox_user, zendesk, bridge)
    reply = customer_mail("Re: Richiesta modulo", "m2@example.org", in_reply_to="m1@example.org")
    dovecot.append(mailbox_user, reply)
    zendesk.fail("PUT", r"^/api/v2/tickets/\d+$", exception=requests.ReadTimeout, count=-1)

    assert bridge.poll().counts["retry"] == 1
    assert len(ticket["comments"]) == 1
    assert raws(dovecot, mailbox_user) == [reply]
    assert bridge.records()[-1].state == MessageState.PUSHING

    zendesk.clear_faults()
    summary = bridge.poll()

    assert summary.counts["followed_up"] == 1
    assert len(ticket["comments"]) == 2
    assert dovecot.list_folder(mailbox_user) == []


# -- mail the bridge cannot take ----------------------------------------------------------------


def test_mail_with_no_usable_sender_becomes_a_ticket_for_the_unknown_sender(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Mittente rotto", "nofrom@example.org", sender="postmaster at nowhere")
    dovecot.append(mailbox_user, raw)
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  unknown_sender="nobody@example.org")])

    summary = bridge.poll()

    assert (summary.counts["ticketed"], summary.counts["failed"]) == (1, 0)
    [ticket] = zendesk.ticket_list()
    assert zendesk.user(ticket["requester_id"])["email"] == "nobody@example.org"
    assert "unknown_sender" in ticket["tags"]
    assert ticket["comments"][0]["plain"].startswith("Original sender: postmaster at nowhere")
    assert raws(dovecot, mailbox_user, "Processed") == [raw]


def test_mail_with_no_usable_sender_is_ignored_visibly_when_the_account_says_so(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    raw = customer_mail("Mittente rotto", "nofrom@example.org", sender="postmaster at nowhere")
    dovecot.append(mailbox_user, raw)
    bridge = make_bridge([account(dovecot, mailbox_user, "support", unknown_sender="ignore",
                                  ignored_folder="Ignored")])

    summary = bridge.poll()

    assert summary.counts["ignored"] == 1 and summary.ignored_as == {"no_sender": 1}
    assert "ignored=1(no_sender:1)" in summary.line()
    [record] = bridge.records()
    assert record.state == MessageState.IGNORED
    assert "no usable sender address (From: postmaster at nowhere)" in (record.error or "")
    assert record.trace is not None and record.trace["decision"]["ignored_as"] == "no_sender"
    [entry] = bridge.store.log_entries(message="nofrom@example.org")
    assert entry.event == "ignored" and "no usable sender address" in (entry.detail or "")
    assert raws(dovecot, mailbox_user, "Ignored") == [raw]
    assert zendesk.calls_to("POST", TICKETS) == []


def test_mail_over_max_size_goes_to_the_error_folder_without_download(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], recording: Callable[[AccountConfig], ImapMailbox],
) -> None:
    small = customer_mail("Piccola", "small@example.org")
    big = customer_mail("Enorme", "big@example.org", padding=20_000)
    small_uid, big_uid = dovecot.append(mailbox_user, [small, big])
    bridge = make_bridge([account(dovecot, mailbox_user, "support", max_size="8KB")])

    summary = bridge.poll(mailbox_factory=recording)

    assert (summary.counts["ticketed"], summary.counts["failed"]) == (1, 1)
    downloaded = [uid for kind, uids in RecordingClient.log if kind == "fetch-body"
                  for uid in uids]
    assert downloaded == [small_uid]
    assert big_uid not in downloaded
    big_record = next(r for r in bridge.records() if r.ref.endswith(f":{big_uid}"))
    assert big_record.state == MessageState.FAILED
    assert big_record.sha256 is None  # never had the bytes
    assert f"message too large: {len(big)} bytes" in (big_record.error or "")
    assert "max_size is 8192 bytes" in (big_record.error or "")
    assert raws(dovecot, mailbox_user, "Error") == [big]
    assert [t["subject"] for t in zendesk.ticket_list()] == ["Piccola"]


# -- mailbox disturbances -----------------------------------------------------------------------


class ConnectionLostBeforeMove(ImapMailbox):
    """The connection dies right after the ledger recorded the ticket, before the move."""

    def mark_processed_many(self, messages: Any) -> None:
        assert self._client is not None
        self._client.shutdown()
        super().mark_processed_many(messages)


def test_uidvalidity_change_makes_no_duplicate_tickets(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = customer_mail("Rimasta in INBOX", "stuck@example.org")
    moved = customer_mail("Già spostata", "moved@example.org")
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    dovecot.append(mailbox_user, moved)
    assert bridge.poll().counts["ticketed"] == 1
    dovecot.append(mailbox_user, stuck)
    summary = bridge.poll(mailbox_factory=ConnectionLostBeforeMove)
    assert summary.counts["ticketed"] == 1 and summary.error
    assert raws(dovecot, mailbox_user) == [stuck]  # ticketed, still in the inbox
    old = dovecot.uidvalidity(mailbox_user)

    new = dovecot.change_uidvalidity(mailbox_user)
    # A server migration brings the processed mail back, next to new mail.
    fresh = customer_mail("Nuova dopo la migrazione", "fresh@example.org")
    dovecot.append(mailbox_user, [moved, fresh])
    with caplog.at_level(logging.WARNING, logger="connector.runner"):
        summary = bridge.poll()

    assert (summary.counts["fetched"], summary.counts["ticketed"],
            summary.counts["duplicate"]) == (3, 1, 2)
    assert sorted(t["subject"] for t in zendesk.ticket_list()) == [
        "Già spostata", "Nuova dopo la migrazione", "Rimasta in INBOX"]
    assert f"UIDVALIDITY changed from {old} to {new}" in caplog.text
    assert dovecot.list_folder(mailbox_user) == []
    assert len(dovecot.list_folder(mailbox_user, "Processed")) == 4


def test_initial_sync_skip_existing_leaves_old_mail_alone(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    old_mail = [customer_mail(f"Vecchia {n}", f"old{n}@example.org") for n in range(2)]
    dovecot.append(mailbox_user, old_mail)
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  initial_sync="skip_existing")])

    first = bridge.poll()

    assert first.counts["skipped"] == 2 and first.counts["fetched"] == 0
    assert zendesk.calls_to("POST", TICKETS) == []
    assert raws(dovecot, mailbox_user) == old_mail
    assert {r.state for r in bridge.records()} == {MessageState.SKIPPED}

    new_mail = customer_mail("Nuova", "new@example.org")
    dovecot.append(mailbox_user, new_mail)
    second = bridge.poll()

    assert (second.counts["fetched"], second.counts["ticketed"]) == (1, 1)
    assert [t["subject"] for t in zendesk.ticket_list()] == ["Nuova"]
    assert raws(dovecot, mailbox_user) == old_mail
    assert raws(dovecot, mailbox_user, "Processed") == [new_mail]


# Mail left alone by initial_sync skip_existing stays alone after a UIDVALIDITY change (a
# server migration or mailbox rebuild renumbers every message): the Message-IDs recorded at
# the baseline recognise it under its new refs.
def test_uidvalidity_change_keeps_skip_existing_mail_skipped(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    old_mail = [customer_mail(f"Vecchia {n}", f"old{n}@example.org") for n in range(2)]
    dovecot.append(mailbox_user, old_mail)
    bridge = make_bridge([account(dovecot, mailbox_user, "support",
                                  initial_sync="skip_existing")])
    assert bridge.poll().counts["skipped"] == 2

    dovecot.change_uidvalidity(mailbox_user)
    new_mail = customer_mail("Nuova", "new@example.org")
    dovecot.append(mailbox_user, new_mail)
    bridge.poll()

    assert [t["subject"] for t in zendesk.ticket_list()] == ["Nuova"]
    assert raws(dovecot, mailbox_user) == old_mail


def test_server_without_move_processes_by_copy_and_uid_expunge(
    dovecot_without_move: DovecotServer, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], recording: Callable[[AccountConfig], ImapMailbox],
) -> None:
    server = dovecot_without_move
    user = server.add_user()
    raw = customer_mail("Server vecchio", "nomove@example.org")
    [uid] = server.append(user, raw)
    bridge = make_bridge([account(server, user, "support")])

    summary = bridge.poll(mailbox_factory=recording)

    assert summary.counts["ticketed"] == 1
    moves = [entry for entry in RecordingClient.log if entry[0] != "fetch-body"]
    assert moves == [("copy", [uid]), ("uid-expunge", [uid])]
    assert server.list_folder(user) == []  # expunged, not just flagged \Deleted
    assert [m.raw for m in server.list_folder(user, "Processed")] == [raw]


def test_connection_dropped_mid_batch_loses_and_duplicates_nothing(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    mails = [customer_mail(f"Lotto {n}", f"batch{n}@example.org", padding=8_000)
             for n in range(6)]
    dovecot.append(mailbox_user, mails)
    with CuttingProxy(dovecot.imap_port) as proxy:
        bridge = make_bridge([account(dovecot, mailbox_user, "support", port=proxy.port,
                                      batch_size=3)])

        def cut_after_the_third(ticket: dict[str, Any]) -> None:
            if len(zendesk.tickets) == 3:
                # Room for the third MOVE's answer, then the next FETCH breaks off mid-literal.
                proxy.cut_after(3_000)

        zendesk.on_ticket_created = cut_after_the_third
        first = bridge.poll()
        zendesk.on_ticket_created = None

    assert first.counts["ticketed"] == 3
    assert first.error and "connection lost" in first.error
    assert len(dovecot.list_folder(mailbox_user)) == 3
    assert raws(dovecot, mailbox_user, "Processed") == mails[:3]

    direct: AccountConfig = dataclasses.replace(bridge.config.accounts[0], port=dovecot.imap_port)
    second = bridge.poll(account=direct)

    assert (second.counts["fetched"], second.counts["ticketed"], second.error) == (3, 3, None)
    subjects = [t["subject"] for t in zendesk.ticket_list()]
    assert subjects == [f"Lotto {n}" for n in range(6)]
    assert dovecot.list_folder(mailbox_user) == []
    assert sorted(raws(dovecot, mailbox_user, "Processed")) == sorted(mails)
    assert {zendesk.user(t["requester_id"])["email"] for t in zendesk.ticket_list()} == {
        "mario.rossi@example.org"}


# A connection the poller kept open from the previous pass and that the server has closed
# meanwhile (idle autologout, restart, a NAT timeout) is reopened at the next pass, without
# counting a connection failure towards auto_disable.
def test_connection_closed_by_the_server_between_polls_is_reopened(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support", idle=False)])
    dovecot.append(mailbox_user, customer_mail("Prima", "k1@example.org"))
    assert bridge.poll().counts["ticketed"] == 1

    dovecot.kick(mailbox_user)  # the server ends the idle session
    wait_for_log(dovecot, f"imap({mailbox_user.name})", "Disconnected: Server shutting down")
    dovecot.append(mailbox_user, customer_mail("Dopo la disconnessione", "k2@example.org"))
    summary = bridge.poll()

    assert (summary.error, summary.counts["ticketed"]) == (None, 1)
    assert bridge.store.get_health("support").consecutive_failures == 0
    assert dovecot.list_folder(mailbox_user) == []


def test_mail_retrying_when_the_folder_is_renumbered_is_ticketed_once(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    # Zendesk times out (the create may or may not have landed: here it did, answer lost),
    # then the server renumbers the folder. The mail's old record is orphaned; its new copy
    # takes the interrupted create over, finds the ticket, and makes no second one.
    raw = customer_mail("Rinumerata", "renumbered@example.org")
    dovecot.append(mailbox_user, raw)
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, after=True)
    zendesk.fail("POST", TICKETS, exception=requests.ReadTimeout, count=-1)
    bridge = make_bridge([account(dovecot, mailbox_user, "support")])
    assert bridge.poll().counts["retry"] == 1
    dovecot.change_uidvalidity(mailbox_user)
    zendesk.clear_faults()

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1, summary.line()
    assert len(zendesk.ticket_list()) == 1
    assert raws(dovecot, mailbox_user) == []
    states = sorted(r.state.value for r in bridge.records())
    assert states == ["done", "ignored"]  # the new copy, and the old record it took over
