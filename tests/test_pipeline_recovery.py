"""Recovery paths of the pipeline and the account worker, with an in-memory host behind the
HostAdapter interface and an in-memory mailbox (the HTTP and IMAP sides have their own tests
against the Zendesk OAS and a real Dovecot)."""

from __future__ import annotations

import io
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import StoreTarget
from pec_provider import make_circuit
from shared_material import pec_sample

from connector.config import AccountConfig, HostConfig
from connector.errors import (
    ConfigError,
    FetchError,
    PermanentHostError,
    TransientHostError,
)
from connector.fetch.base import ListedMessage, MailboxState, RemoteMessage
from connector.hosts.base import Comment, CreatedTicket, NewTicket, TicketInfo
from connector.hosts.retry import SlidingWindowLimiter
from connector.hosts.vocabulary import vocabulary_for
from connector.service import admin
from connector.service import runner as runner_module
from connector.service.pipeline import Outcome, Pipeline
from connector.service.runner import AccountPoller, Service
from connector.store import MessageState
from connector.store.sqlite import SQLiteStore

PLAIN = (b"From: Anna <anna@example.com>\r\nTo: support@example.com\r\nSubject: hi\r\n"
         b"Message-ID: <p1@example.com>\r\n\r\nhello\r\n")
SENT_MSGID = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it"
#: Receipts count only when a trusted provider signed them: the placeholder-signed samples are
#: signed again by a test provider whose CA the account trusts (tests/pec_provider.py).
CIRCUIT = make_circuit()
ACCOUNT = AccountConfig(name="pec", protocol="imap", host="127.0.0.1", port=993,
                        security="tls", username="u@example.com", password="p", pec=True,
                        idle=False, pec_trust=CIRCUIT.trust_store())
HOST = HostConfig(type="dry-run")


def sample(name: str) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", pec_sample(name).read_bytes())


def provider_sample(name: str) -> bytes:
    return CIRCUIT.sign(sample(name))


class MemoryHost:
    """The HostAdapter interface over dictionaries."""

    name = "memory"
    vocabulary = vocabulary_for(HostConfig(type="dry-run"))

    def __init__(self, closed: Iterable[str] = ()) -> None:
        self.created: list[NewTicket] = []
        self.comments: list[Comment] = []
        self.closed = set(closed)
        self.create_mode = "ok"  # ok | permanent | lost-answer

    def check_credentials(self) -> str:
        return "memory"

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket:
        if self.create_mode == "permanent":
            raise PermanentHostError("422 requester invalid")
        self.created.append(ticket)
        if self.create_mode == "lost-answer":
            raise TransientHostError("create ticket: timed out")
        return CreatedTicket(id=1000 + len(self.created))

    def add_comment(self, comment: Comment) -> None:
        from connector.errors import TicketClosedError

        if comment.ticket_id in self.closed:
            raise TicketClosedError(comment.ticket_id)
        self.comments.append(comment)

    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        status = "closed" if ticket_id in self.closed else "open"
        return TicketInfo(id=ticket_id, status=status, requester_email="rec@fakepec.it")

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]:
        return [TicketInfo(id=str(1001 + i), status="open") for i, t in enumerate(self.created)
                if t.external_id == external_id]

    def comment_exists(self, ticket_id: str, dedupe_key: str) -> bool:
        return any(c.dedupe_key == dedupe_key for c in self.comments)

    def user_exists(self, email: str) -> bool:
        return True

    def add_tags(self, ticket_id: str, tags: list[str]) -> None: ...

    def remove_tags(self, ticket_id: str, tags: list[str]) -> None: ...


class MemoryMailbox:
    """A mailbox of ref -> bytes; ``fail_after`` drops the connection after N messages."""

    account = "pec"
    connected = True

    def __init__(self, messages: dict[str, bytes], fail_after: int | None = None) -> None:
        self.messages = dict(messages)
        self.fail_after = fail_after
        self.processed: list[str] = []

    def __enter__(self) -> MemoryMailbox:
        return self

    def __exit__(self, *exc: object) -> None: ...

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def has_capability(self, name: str) -> bool:
        return False

    def ensure_folders(self) -> list[str]:
        return []

    def state(self) -> MailboxState:
        return MailboxState("pec", "INBOX", 1, frozenset(self.messages))

    def list_new(self, known: Callable[[str], bool]) -> list[ListedMessage]:
        return [ListedMessage("pec", ref, len(raw)) for ref, raw in self.messages.items()
                if not known(ref)]

    def fetch(self, listed: Iterable[ListedMessage]) -> Iterator[RemoteMessage]:
        for n, item in enumerate(listed):
            if self.fail_after is not None and n >= self.fail_after:
                raise FetchError("connection dropped")
            yield RemoteMessage("pec", item.ref, item.size, self.messages[item.ref])

    def mark_processed(self, handle: Any) -> None:
        self.processed.append(handle.ref)
        self.messages.pop(handle.ref, None)

    def mark_failed(self, handle: Any) -> None:
        self.messages.pop(handle.ref, None)


def test_replay_after_a_lost_answer_makes_no_second_ticket(tmp_path: Path) -> None:
    account = replace(ACCOUNT, pec=False, protocol="pop3")
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    host = MemoryHost()
    pipeline = Pipeline(account, HOST, store, host)  # type: ignore[arg-type]
    host.create_mode = "permanent"
    first = pipeline.process("u1", PLAIN, len(PLAIN))
    assert first.outcome == Outcome.FAILED
    host.create_mode = "lost-answer"  # replay 1: the ticket is made, the answer is lost
    admin.errors_replay(store, first.record_id, account, pipeline, None, io.StringIO())
    host.create_mode = "ok"  # replay 2, later: must find the ticket, not make another

    outcome = admin.errors_replay(store, first.record_id, account, pipeline, None,
                                  io.StringIO())

    assert outcome == Outcome.TICKETED
    assert len(host.created) == 1


def test_held_receipts_of_a_failed_pass_are_not_added_twice(target: StoreTarget) -> None:
    store = target.store()
    store.map_message_ids("42", [SENT_MSGID], direction="out", account="pec")
    host = MemoryHost()
    pipeline = Pipeline(ACCOUNT, HOST, store, host)  # type: ignore[arg-type]
    box = MemoryMailbox(
        {"r1": provider_sample("anon-aruba-accettazione-2024-placeholder-sig.eml"),
         "r2": provider_sample("anon-aruba-errore-consegna-2024-placeholder-sig.eml"),
         "r3": PLAIN}, fail_after=2)
    poller = AccountPoller(ACCOUNT, store, pipeline, mailbox_factory=lambda a: box)
    assert poller.poll().error  # the connection drops after the two receipts were held
    box.fail_after = None

    poller.poll()

    notes = [c for c in host.comments if c.ticket_id == "42"]
    assert len(notes) == 1 and len(notes[0].uploads) == 2  # each receipt attached once
    assert sorted(box.processed) == ["r1", "r2", "r3"]


def test_receipts_for_a_closed_ticket_share_one_follow_up(target: StoreTarget) -> None:
    store = target.store()
    store.map_message_ids("42", [SENT_MSGID], direction="out", account="pec")
    host = MemoryHost(closed=["42"])
    pipeline = Pipeline(ACCOUNT, HOST, store, host)  # type: ignore[arg-type]
    box = MemoryMailbox({"r1": provider_sample("anon-aruba-accettazione-2024-placeholder-sig.eml")})
    poller = AccountPoller(ACCOUNT, store, pipeline, mailbox_factory=lambda a: box)
    poller.poll()
    box.messages = {"r2": provider_sample("anon-aruba-errore-consegna-2024-placeholder-sig.eml")}

    poller.poll()

    assert [t.follows_up for t in host.created] == ["42"]
    assert [c.ticket_id for c in host.comments] == ["1001"]  # the failure: on the follow-up
    assert not host.comments[0].public


def test_a_store_error_does_not_end_the_account_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "backoff_delay", lambda failures, rng=None: 0.05)
    account = replace(ACCOUNT, pec=False, poll_interval=0.0005)
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    host = MemoryHost()
    pipeline = Pipeline(account, HOST, store, host)  # type: ignore[arg-type]
    box = MemoryMailbox({"r1": PLAIN})
    poller = AccountPoller(account, store, pipeline, mailbox_factory=lambda a: box)
    broken = {"on": True}
    real_begin, real_failure = store.begin_message, store.record_connection_failure

    def begin(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_begin(*args, **kwargs)

    def failure(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_failure(*args, **kwargs)

    monkeypatch.setattr(store, "begin_message", begin)
    monkeypatch.setattr(store, "record_connection_failure", failure)
    service = Service([poller])
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    time.sleep(0.3)
    broken["on"] = False  # the disk has room again
    deadline = time.monotonic() + 10
    while not host.created and time.monotonic() < deadline:
        time.sleep(0.05)
    service.stop.set()
    thread.join(10)
    assert len(host.created) == 1
    assert [r.state for r in store.messages()] == [MessageState.DONE]


def test_the_update_limiter_stops_waiting_on_shutdown() -> None:
    stop = threading.Event()
    limiter = SlidingWindowLimiter(1, 600.0, clock=time.monotonic, sleep=stop.wait)
    limiter.acquire(7)
    stop.set()  # SIGTERM while the ticket's window is full
    started = time.monotonic()
    with pytest.raises(TransientHostError):
        limiter.acquire(7)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("key", ["processed_folder", "error_folder"])
def test_move_target_must_differ_from_the_folder(key: str) -> None:
    from connector.config import config_from_mapping

    data = {"host": {"type": "dry-run"}, "accounts": [{
        "name": "a", "protocol": "imap", "host": "127.0.0.1", "security": "none",
        "username": "u", "password_file": __file__, key: "INBOX"}]}
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, "cfg.yaml", Path("."))
    assert info.value.key == f"accounts[0].{key}"
