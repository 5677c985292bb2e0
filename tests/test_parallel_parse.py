"""Parsing ahead in worker processes (connector.service.parsing, issue 6).

The same mixed corpus (plain, HTML with an inline image, PDF, a large mail, replies, a
duplicate, a mail with an invalid From (ticketed for the unknown sender), something that is not
a mail at all, a PEC envelope and two PEC receipts held to share one note) goes through a real
Dovecot mailbox and the Zendesk fake once without a pool and once with one: the tickets, their
comments and attachments, the ledger and the mailbox folders must come out the same, in the
same order. Then workers that
raise or die: their messages are parsed in the main thread and nothing is lost.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dovecot import DovecotServer, MailUser
from pec_provider import make_circuit
from shared_material import pec_sample
from zendesk_responses import (
    Bridge,
    FakeZendesk,
    account,
    customer_mail,
    fake_zendesk,
    write_config,
)

from connector.fetch.base import RemoteMessage
from connector.mail.parse import parse_message
from connector.service import parsing
from connector.service.parsing import ParsePool, Prepared, parse_ahead, prepare
from connector.service.runner import AccountPoller, AccountSummary

TICKETS = r"^/api/v2/tickets$"
ACCOUNT = "mixed"
CRASH = b"X-Test-Worker-Fault: crash"
RAISE = b"X-Test-Worker-Fault: raise"

# One message the bridge "sent" (tests/test_pec_ingest.py): its acceptance and its failure.
SENT_ACCEPTANCE = "anon-aruba-accettazione-2024-placeholder-sig.eml"
SENT_FAILURE = "anon-aruba-errore-consegna-2024-placeholder-sig.eml"
SENT_MSGID = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it"
#: The receipts' placeholder signatures are replaced by this test provider's, whose CA the
#: config trusts (tests/pec_provider.py): workers judge with the shipped anchors, the main
#: thread again with the account's.
CIRCUIT = make_circuit()
ENVELOPE = "aruba-posta-certificata-2014-01.eml"


def faulty_prepare(raw: bytes, **kwargs: Any) -> Prepared:
    """``prepare`` as a worker runs it, with faults on marked mail (runs in the worker)."""
    if CRASH in raw:
        os._exit(70)  # the worker dies mid-task: the pool breaks
    if RAISE in raw:
        raise RuntimeError("injected fault in a parse worker")
    return prepare(raw, **kwargs)


@functools.cache
def signed_receipts() -> tuple[bytes, bytes]:
    """Signed once: ECDSA signatures differ each time, and both runs must see the same bytes."""
    return CIRCUIT.sign(sample(SENT_ACCEPTANCE)), CIRCUIT.sign(sample(SENT_FAILURE))


def sample(name: str) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", pec_sample(name).read_bytes())


def first_pass(marks: dict[int, bytes] | None = None) -> list[bytes]:
    """The first pass's mail, in APPEND order (MIME boundaries are random: build it once per
    comparison). ``marks`` adds a fault header to mail i."""
    mails = [
        customer_mail("Fattura errata", "m1@example.org"),
        customer_mail("Accesso negato", "m2@example.org", html="<p>Non <b>riesco</b></p>",
                      inline_png=True),
        customer_mail("Modulo allegato", "m3@example.org", pdf=True),
        customer_mail("Storico lungo", "m4@example.org", padding=300_000),
        customer_mail("Re: Fattura errata", "r1@example.org", in_reply_to="m1@example.org"),
        customer_mail("Fattura errata", "m1@example.org"),  # the same mail again
        customer_mail("Mittente rotto", "bad@example.org", sender="not an address"),
        b"this is not a mail, only a line of text\r\n",
        sample(ENVELOPE),
        customer_mail("Re: Accesso negato", "r2@example.org", in_reply_to="m2@example.org",
                      text="Ancora nulla.\n"),
        customer_mail("Ordine 77", "m5@example.org", sender="Anna <anna@example.net>"),
        customer_mail("Re: Modulo allegato", "r3@example.org", in_reply_to="m3@example.org"),
    ]
    for index, mark in (marks or {}).items():
        mails[index] = mark + b"\r\n" + mails[index]
    return mails


def run_corpus(tmp_path: Path, dovecot: DovecotServer, user: MailUser,
               parser: ParsePool | None, mails: list[bytes]) -> dict[str, Any]:
    """Three passes over the corpus (the first with the first ticket create timing out, so its
    reply and its copy wait; the second with two receipts for one ticket): what the helpdesk,
    the ledger and the mailbox show, and the order the pipeline saw the mail in."""
    dovecot.append(user, mails)
    tmp_path.mkdir()
    (tmp_path / "test-pec-ca.pem").write_bytes(CIRCUIT.ca_pem)
    with fake_zendesk() as zd:
        # A PEC account: receipts count only there (elsewhere they are look-alikes).
        mailbox = account(dovecot, user, ACCOUNT, batch_size=4, pec=True, initial_sync="all")
        bridge = Bridge(write_config(tmp_path, [mailbox],
                                     pec={"trust_anchors": [str(tmp_path / "test-pec-ca.pem")]}))
        try:
            acc = bridge.config.accounts[0]
            poller = AccountPoller(acc, bridge.store, bridge.pipeline(acc), parser=parser)
            seen: list[tuple[str, bool]] = []
            process = poller.pipeline.process

            def recording(ref: str, raw: bytes | None, size: int | None = None,
                          **kwargs: Any) -> Any:
                seen.append((ref, kwargs.get("prepared") is not None))
                return process(ref, raw, size, **kwargs)

            poller.pipeline.process = recording  # type: ignore[method-assign]
            fetch_order = [f"{ref}" for ref in _inbox_refs(poller)]
            zd.fail("POST", TICKETS, exception=requests.ReadTimeout, count=3)
            first = poller.poll()
            first_seen = list(seen)

            [m1] = [t for t in zd.ticket_list() if t["subject"] == "Fattura errata"] or [None]
            assert m1 is None  # its create timed out: it and its reply wait for the next pass
            [m2] = [t for t in zd.ticket_list() if t["subject"] == "Accesso negato"]
            bridge.store.map_message_ids(m2["id"], [SENT_MSGID], direction="out",
                                         account=ACCOUNT)
            dovecot.append(user, list(signed_receipts()))
            second = poller.poll()
            third = poller.poll()  # the reply waited for the copy of its parent
            poller.close()
            return {
                "summaries": [_counts(first), _counts(second), _counts(third)],
                "tickets": [_ticket(zd, t) for t in zd.ticket_list()],
                "records": [(r.state.value, r.action, r.ticket_id, r.message_id, r.sha256,
                             r.dedupe_key, r.attempts) for r in bridge.records()],
                "folders": {f: [hashlib.sha256(m.raw).hexdigest()
                                for m in dovecot.list_folder(user, f)]
                            for f in ("INBOX", "Processed", "Error")},
                "first_pass_order": [ref for ref, _ in first_seen],
                "fetch_order": fetch_order,
                "prepared": [p for _, p in seen],
            }
        finally:
            bridge.close()


def _inbox_refs(poller: AccountPoller) -> list[str]:
    mailbox = poller._connected()
    return [item.ref for item in mailbox.list_new(lambda ref: False)]


def _counts(summary: AccountSummary) -> dict[str, int]:
    return dict(sorted(summary.counts.items()))


def _ticket(zd: FakeZendesk, ticket: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ticket["id"], "subject": ticket["subject"], "status": ticket["status"],
        "requester": zd.user(ticket["requester_id"])["email"], "tags": sorted(ticket["tags"]),
        "comments": [(c["plain"], c["public"],
                      [(a["file_name"], hashlib.sha256(a["data"]).hexdigest())
                       for a in c["attachments"]]) for c in ticket["comments"]],
    }


@pytest.fixture
def pool() -> Iterator[ParsePool]:
    with ParsePool(2) as made:
        yield made


@pytest.fixture
def small_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 300 kB mail is parsed in the main thread: the size limit is exercised too."""
    monkeypatch.setattr(parsing, "MAX_AHEAD_BYTES", 100_000)


def test_same_outcomes_and_order_with_and_without_parsing_ahead(
        tmp_path: Path, dovecot: DovecotServer, pool: ParsePool, small_ahead: None) -> None:
    mails = first_pass()
    alone = run_corpus(tmp_path / "alone", dovecot, dovecot.add_user(), None, mails)
    ahead = run_corpus(tmp_path / "ahead", dovecot, dovecot.add_user(), pool, mails)

    # The corpus does what it is meant to: tickets, a follow-up after its parent waited, a
    # duplicate, a ticket for a mail with no usable From, a failure, a PEC ticket, two
    # receipts in one note.
    assert alone["summaries"][0]["fetched"] == 12
    # The timed-out create, its reply and its copy wait for the next pass.
    assert alone["summaries"][0]["retry"] == 3
    assert alone["summaries"][0]["failed"] == 1  # not a mail
    assert any("unknown_sender" in t["tags"] for t in alone["tickets"])  # no usable From
    assert alone["summaries"][1]["duplicate"] == 1
    assert alone["summaries"][1]["noted"] == 2  # the receipts
    assert alone["summaries"][2]["followed_up"] == 1
    assert any("pec_connector" in t["tags"] for t in alone["tickets"])
    [receipts] = [c for t in alone["tickets"] for c in t["comments"]
                  if any(name.startswith("pec-receipt") for name, _ in c[2])]
    assert len(receipts[2]) == 2 and receipts[1] is False  # both in one internal note
    assert len(alone["folders"]["Error"]) == 1 and alone["folders"]["INBOX"] == []

    for key in ("summaries", "tickets", "records", "folders"):
        assert ahead[key] == alone[key], key
    # Processed in fetch order, and the pool did the parsing (all but the 300 kB mail and
    # the first pass's two waiting mail, which the second pass has parsed ahead as well).
    assert ahead["first_pass_order"] == ahead["fetch_order"][:12]
    assert alone["prepared"] == [False] * len(alone["prepared"])
    assert ahead["prepared"][:12] == [i not in (3, 7) for i in range(12)]  # 7: not a mail
    assert pool.restarts == 0


def test_a_worker_that_raises_or_dies_loses_nothing(
        tmp_path: Path, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture) -> None:
    mails = first_pass(marks={2: RAISE, 10: CRASH})
    alone = run_corpus(tmp_path / "alone", dovecot, dovecot.add_user(), None, mails)
    with ParsePool(1, task=faulty_prepare) as faulty:
        ahead = run_corpus(tmp_path / "ahead", dovecot, dovecot.add_user(), faulty, mails)
        assert faulty.restarts == 1  # the dead worker's pool was replaced, once

    for key in ("summaries", "tickets", "records", "folders"):
        assert ahead[key] == alone[key], key
    assert ahead["first_pass_order"] == ahead["fetch_order"][:12]
    prepared = ahead["prepared"][:12]
    assert prepared[2] is False and prepared[10] is False  # parsed again in the main thread
    assert prepared[0] is True
    assert "a parse worker died" in caplog.text


def test_a_pool_that_keeps_breaking_is_given_up(tmp_path: Path) -> None:
    raw = CRASH + b"\r\n" + customer_mail("Crash", "c@example.org")
    with ParsePool(1, task=faulty_prepare, max_restarts=1) as faulty:
        for _ in range(2):
            pending = faulty.submit(raw, account_is_pec=False, account="a", ref="1")
            assert pending is not None and pending.result() is None
        assert faulty.submit(raw, account_is_pec=False, account="a", ref="1") is None
        assert not faulty.enabled


def test_prepared_round_trip_keeps_raw_and_the_hashes_computed_once() -> None:
    raw = customer_mail("Allegato", "att@example.org", pdf=True, inline_png=True)
    with ParsePool(1) as pool:
        pending = pool.submit(raw, account_is_pec=False, account="a", ref="1")
        assert pending is not None
        prepared = pending.result()
    assert prepared is not None and prepared.pec is None
    message = prepared.message
    assert message.raw is raw  # the very object the pipeline was given, not a copy
    # Hashed in the worker; the cached values came along (no second hash in the main thread).
    assert {"sha256", "content_hash", "dedupe_key"} <= set(vars(message))
    assert message.sha256 == hashlib.sha256(raw).hexdigest()
    assert message == parse_message(raw)
    assert message.dedupe_key == parse_message(raw).dedupe_key
    copy = pickle.loads(pickle.dumps(prepared))
    assert copy == prepared and vars(copy.message)["dedupe_key"] == message.dedupe_key


def test_pec_is_looked_at_ahead_with_the_certified_original_parsed() -> None:
    raw = sample(ENVELOPE)
    prepared = prepare(raw, account_is_pec=False, account="a", ref="1")
    assert prepared.pec is not None and prepared.pec.is_pec
    assert prepared.original is not None and prepared.pec.original_raw is not None
    assert prepared.original == parse_message(prepared.pec.original_raw)
    ordinary = prepare(customer_mail("Ciao", "c@example.org"), account_is_pec=False,
                       account="a", ref="2")
    assert ordinary.pec is None
    on_pec_account = prepare(customer_mail("Ciao", "c@example.org"), account_is_pec=True,
                             account="a", ref="3")
    assert on_pec_account.pec is not None and not on_pec_account.pec.is_pec


class _Recorder:
    """A parser that answers at once and records what it was given."""

    workers = 1

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, raw: bytes, *, account_is_pec: bool, account: str, ref: str) -> Any:
        self.submitted.append(ref)
        recorder = self

        class Pending:
            def result(self) -> Prepared | None:
                return Prepared(parse_message(raw))

            def cancel(self) -> None:
                recorder.cancelled.append(ref)

        return Pending()


def _fetched(count: int, error_after: int | None = None) -> Iterator[RemoteMessage]:
    for i in range(count):
        if error_after is not None and i == error_after:
            raise ConnectionError("connection dropped")
        raw = customer_mail(f"Mail {i}", f"{i}@example.org")
        yield RemoteMessage(account="a", ref=f"INBOX:1:{i}", size=len(raw), raw=raw)


def test_parse_ahead_keeps_the_order_and_raises_a_fetch_error_where_it_happened() -> None:
    recorder = _Recorder()
    got = []
    stream = parse_ahead(_fetched(10, error_after=7), recorder, account="a",
                         account_is_pec=False, window=3)
    with pytest.raises(ConnectionError):
        for message, prepared in stream:
            assert prepared is not None and prepared.message.raw is message.raw
            got.append(message.ref)
    assert got == [f"INBOX:1:{i}" for i in range(7)]  # every message fetched before the error


def test_parse_ahead_stays_inside_its_window_and_cancels_on_close() -> None:
    recorder = _Recorder()
    stream = parse_ahead(_fetched(10), recorder, account="a", account_is_pec=False, window=3)
    message, _ = next(stream)
    assert message.ref == "INBOX:1:0"
    assert recorder.submitted == ["INBOX:1:0", "INBOX:1:1", "INBOX:1:2"]
    stream.close()
    assert recorder.cancelled == ["INBOX:1:1", "INBOX:1:2"]


def test_a_prepared_parse_of_other_bytes_is_ignored(tmp_path: Path, dovecot: DovecotServer,
                                                    zendesk: FakeZendesk) -> None:
    user = dovecot.add_user()
    bridge = Bridge(write_config(tmp_path, [account(dovecot, user, ACCOUNT)]))
    try:
        pipeline = bridge.pipeline(bridge.config.accounts[0])
        raw = customer_mail("Vero", "true@example.org")
        other = prepare(customer_mail("Falso", "false@example.org"), account_is_pec=False,
                        account=ACCOUNT, ref="x")
        result = pipeline.process("INBOX:1:1", raw, len(raw), prepared=other)
        [ticket] = zendesk.ticket_list()
        assert ticket["subject"] == "Vero" and result.ticket_id == str(ticket["id"])
    finally:
        bridge.close()
