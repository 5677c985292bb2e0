"""Durability of the ledger on real SQLite files: which commits are fsync'd, and that whatever
was committed is on disk before anything outside the store acts on it.

The rule under test (connector/store/sqlite.py): a power cut leaves a prefix of the commits,
which is what a SIGKILL would leave, so only the moments an effect leaves the process need the
log synced: the PUSHING record before a host call (a durable commit), and a barrier
(``make_durable``) before mail is moved or deleted on the server and before ``deliver`` /
``import`` report success. Every other ledger write of a mail is committed without an fsync.

A power cut cannot be simulated, so the syscall-level tests run a child under ``strace`` and
read the order of what the kernel was asked: writes to the ``-wal`` file, its ``fsync`` /
``fdatasync`` calls, and markers the child drops as ``access()`` calls on names that do not
exist (one before each host call that changes something, each settle call on the mailbox,
each exit status). At a marker, every byte written to the log before it must have been synced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_pipeline_recovery import MemoryHost, MemoryMailbox

from connector.config import AccountConfig, HostConfig
from connector.hosts.base import Comment, CreatedTicket, NewTicket
from connector.service.pipeline import Pipeline
from connector.service.runner import AccountPoller
from connector.store import MessageState, SQLiteStore

TESTS = Path(__file__).resolve().parent
STRACE = shutil.which("strace")

# One mail at a time: the effects are checked in one order (each mail's own sync before its
# host call holds with several in flight too; the crash test runs that way).
HOST = HostConfig(type="dry-run", max_in_flight=1)


def mail(message_id: str, subject: str, *, sender: str | None = "Anna <anna@example.com>",
         in_reply_to: str | None = None, body: str = "hello") -> bytes:
    lines = [f"From: {sender}"] if sender else []
    lines += ["To: support@example.com", f"Subject: {subject}", f"Message-ID: <{message_id}>",
              "Date: Mon, 2 Dec 2024 10:00:00 +0100"]
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


#: One pass's mail: two new conversations, a reply to the first (a comment on its ticket),
#: something that is not a mail (fails: the error folder), and the first again under another ref
#: (a duplicate: no host call).
MAILS = {
    "r1": mail("d1@example.com", "printer broken"),
    "r2": mail("d2@example.com", "Re: printer broken", in_reply_to="d1@example.com",
               body="still broken"),
    "r3": b"this is not a mail, only a line of text\r\n",
    "r4": mail("d4@example.com", "invoice question", sender="Bob <bob@example.com>"),
    "r5": mail("d1@example.com", "printer broken"),
}


def account(protocol: str = "imap", **extra: Any) -> AccountConfig:
    fields: dict[str, Any] = {"name": "support", "protocol": protocol, "host": "127.0.0.1",
                              "port": 1, "security": "none", "username": "u", "password": "p",
                              "idle": False, "batch_size": 2,
                              "delete_after_processing": protocol == "pop3"}
    fields.update(extra)
    return AccountConfig(**fields)


# -- the child's side: doubles that drop markers -----------------------------------------------


class Marks:
    """Markers strace shows in order: ``access()`` on ``<dir>/<n>-<name>`` (never created)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.count = 0

    def hit(self, name: str) -> None:
        self.count += 1
        os.access(os.path.join(self.directory, f"{self.count:04d}-{name}"), os.F_OK)


class MarkedHost(MemoryHost):
    """The in-memory host; a marker right before each call that changes the helpdesk."""

    def __init__(self, marks: Marks) -> None:
        super().__init__()
        self.marks = marks

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket:
        self.marks.hit("effect-create")
        return super().create_ticket(ticket)

    def add_comment(self, comment: Comment) -> None:
        self.marks.hit("effect-comment")
        super().add_comment(comment)


class MarkedMailbox(MemoryMailbox):
    """The in-memory mailbox; a marker right before the server is told to drop mail. With
    ``many`` it settles a batch per call, as the IMAP mailbox does (UID MOVE of a set)."""

    def __init__(self, messages: dict[str, bytes], marks: Marks | None, *,
                 many: bool = True, keep: bool = False) -> None:
        super().__init__(messages)
        self.marks = marks
        self.keep = keep  # settle calls leave the mail in place (a crash right before them)
        if many:
            self.mark_processed_many = self._processed_many
            self.mark_failed_many = self._failed_many

    def _hit(self, name: str) -> None:
        if self.marks is not None:
            self.marks.hit(name)

    def _processed_many(self, handles: Sequence[Any]) -> None:
        if handles:
            self._hit("settle-processed")
            for handle in handles:
                self._drop(handle)

    def _failed_many(self, handles: Sequence[Any]) -> None:
        if handles:
            self._hit("settle-error")
            for handle in handles:
                self._drop(handle)

    def mark_processed(self, handle: Any) -> None:
        self._hit("settle-processed")
        self._drop(handle)

    def mark_failed(self, handle: Any) -> None:
        self._hit("settle-error")
        self._drop(handle)

    def _drop(self, handle: Any) -> None:
        self.processed.append(handle.ref)
        if not self.keep:
            self.messages.pop(handle.ref, None)


def _child_store_calls(db: str, marks: Marks) -> None:
    """Each write once with its default (durable) and once with ``durable=False``; then the
    barrier after relaxed writes, with nothing pending, and after durable writes only."""
    store = SQLiteStore(db)
    store.make_durable()  # the first barrier of a process always syncs: not under test here
    a = store.begin_message("acc", "a", sha256=None)
    b = store.begin_message("acc", "b", sha256=None, durable=False)
    calls: list[tuple[str, Any]] = [
        ("durable-begin_message", lambda: store.begin_message("acc", "c", sha256="x")),
        ("relaxed-begin_message",
         lambda: store.begin_message("acc", "d", sha256="y", durable=False)),
        ("durable-describe_message", lambda: store.describe_message(
            a.id, dedupe_key="ka", message_id="a@x", sender="s@x", subject="s", trace={})),
        ("relaxed-describe_message", lambda: store.describe_message(
            b.id, dedupe_key="kb", message_id="b@x", sender="s@x", subject="s", trace={},
            durable=False)),
        ("durable-claim_dedupe_key", lambda: store.claim_dedupe_key("kc", a.id)),
        ("relaxed-claim_dedupe_key", lambda: store.claim_dedupe_key("kd", b.id, durable=False)),
        ("durable-release_dedupe_key", lambda: store.release_dedupe_key("kc", a.id)),
        ("relaxed-release_dedupe_key",
         lambda: store.release_dedupe_key("kd", b.id, durable=False)),
        ("durable-record_failure", lambda: store.record_failure(a.id, "transient: 1")),
        ("relaxed-record_failure",
         lambda: store.record_failure(b.id, "transient: 2", durable=False)),
        ("durable-map_message_ids", lambda: store.map_message_ids("7", ["m1@x"])),
        ("relaxed-map_message_ids", lambda: store.map_message_ids("7", ["m2@x"], durable=False)),
        ("durable-quarantine", lambda: store.quarantine(a.id, b"raw a")),
        ("relaxed-quarantine", lambda: store.quarantine(b.id, b"raw b", durable=False)),
        ("durable-set_pending", lambda: store.set_pending(b.id, "new_ticket", {"k": 1})),
        ("durable-finish_message",
         lambda: store.finish_message(a.id, MessageState.FAILED, error="x")),
        ("relaxed-finish_message", lambda: store.finish_message(
            b.id, MessageState.DONE, action="new_ticket", ticket_id="7", thread_ids=["b@x"],
            durable=False)),
        ("durable-reopen_message", lambda: store.reopen_message(a.id)),
        ("durable-release_quarantine", lambda: store.release_quarantine(a.id)),
        ("durable-mark_skipped", lambda: store.mark_skipped("acc", ["s1"])),
        ("durable-set_mailbox_mark", lambda: store.set_mailbox_mark(
            "acc", "INBOX", uidvalidity=5, baseline_taken=False)),
        ("durable-record_success", lambda: store.record_success("acc")),
        ("durable-orphan_unfinished", lambda: store.orphan_unfinished("acc", "c")),
        ("relaxed-finish_message", lambda: store.finish_message(
            a.id, MessageState.IGNORED, durable=False)),
        ("barrier-after-relaxed", store.make_durable),
        ("barrier-with-nothing-pending", store.make_durable),
        ("durable-set_pending", lambda: store.set_pending(a.id, "follow_up", {"k": 2})),
        ("barrier-after-durable-only", store.make_durable),
    ]
    for name, call in calls:
        marks.hit(f"before-{name}")
        call()
        marks.hit(f"after-{name}")
    store.close()


def _child_pass(db: str, marks: Marks, protocol: str) -> None:
    """One poller pass over MAILS; prints the summary's counts."""
    store = SQLiteStore(db)
    config = account(protocol)
    pipeline = Pipeline(config, HOST, store, MarkedHost(marks))  # type: ignore[arg-type]
    box = MarkedMailbox(MAILS, marks, many=protocol == "imap")
    poller = AccountPoller(config, store, pipeline, mailbox_factory=lambda a: box)
    marks.hit("pass-start")
    summary = poller.poll()
    marks.hit("pass-end")
    store.close()
    print(json.dumps(dict(summary.counts)))


def _child_settle_only(db: str, marks: Marks) -> None:
    """A new process over a ledger that already records every mail (its predecessor died
    before the move): the pass only moves them."""
    store = SQLiteStore(db)
    config = account()
    pipeline = Pipeline(config, HOST, store, MarkedHost(marks))  # type: ignore[arg-type]
    box = MarkedMailbox(MAILS, marks)
    poller = AccountPoller(config, store, pipeline, mailbox_factory=lambda a: box)
    marks.hit("pass-start")
    summary = poller.poll()
    marks.hit("pass-end")
    store.close()
    print(json.dumps(dict(summary.counts)))


def _child_cli(db: str, marks: Marks, config_path: str, command: str, *paths: str) -> None:
    """``deliver`` (the mail on stdin) or ``import`` through ``main``, while another
    connection holds the file open as a running ``run`` would (so closing the store neither
    checkpoints nor syncs anything); a marker carries the exit status."""
    import io

    from connector import cli
    from connector.hosts import factory

    factory.make_host = lambda *a, **k: MarkedHost(marks)  # type: ignore[assignment]
    other = sqlite3.connect(db)
    other.execute("SELECT COUNT(*) FROM messages").fetchone()  # joins the WAL
    if command == "deliver":
        sys.stdin = io.TextIOWrapper(io.BytesIO(MAILS["r1"]))
    code = cli.main(["-q", "-c", config_path, command, *paths], out=io.StringIO())
    marks.hit(f"exit-{code}")
    other.close()


def _child(mode: str, db: str, marks_dir: str, *args: str) -> None:
    marks = Marks(marks_dir)
    if mode == "store-calls":
        _child_store_calls(db, marks)
    elif mode == "pass":
        _child_pass(db, marks, *args)
    elif mode == "settle-only":
        _child_settle_only(db, marks)
    elif mode == "cli":
        _child_cli(db, marks, *args)
    elif mode == "sigkill":
        store = SQLiteStore(db)
        record = store.begin_message("acc", "k1", sha256=None, durable=False)
        store.finish_message(record.id, MessageState.DONE, action="new_ticket", ticket_id="9",
                             thread_ids=["k1@x"], durable=False)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise SystemExit(f"unknown mode {mode}")


# -- the parent's side: run the child under strace and read the order -------------------------


@dataclass(frozen=True)
class Mark:
    name: str
    unsynced: bool  # bytes written to the -wal file and not yet fsync'd at this marker
    syncs: int  # fsync/fdatasync calls on the -wal file before this marker


_CALL = re.compile(r"^\d+\s+(\w+)\((.*)$")
_FD = re.compile(r"^(\d+)<([^>]*)>")
_MARK = re.compile(r'"([^"]*)"')


def child_cmd(mode: str, db: Path, marks: Path, *args: str) -> list[str]:
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]; "
            "import test_store_durability as t; t._child(*sys.argv[1:])")
    return [sys.executable, "-c", code, mode, str(db), str(marks), *args]


def traced(tmp_path: Path, mode: str, db: Path, *args: str,
           stdin: bytes = b"") -> tuple[list[Mark], str]:
    """Run the child under strace; its markers in order, and its stdout."""
    assert STRACE, "strace not found: these tests read the child's syscalls (apt install strace)"
    marks_dir = tmp_path / f"marks-{mode}"  # never created: every access() fails, as meant
    log = tmp_path / f"strace-{mode}.log"
    proc = subprocess.run(
        [STRACE, "-f", "-qq", "-y", "-e", "signal=none", "-o", str(log), "-e",
         "trace=write,pwrite64,pwritev,fsync,fdatasync,access,faccessat,faccessat2",
         *child_cmd(mode, db, marks_dir, *args)],
        input=stdin, capture_output=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    wal = f"{db}-wal"
    marks: list[Mark] = []
    unsynced, syncs = False, 0
    for line in log.read_text(errors="replace").splitlines():
        call = _CALL.match(line)
        if call is None:
            continue
        name, rest = call.groups()
        if name in ("access", "faccessat", "faccessat2"):
            target = _MARK.search(rest)
            if target and target.group(1).startswith(f"{marks_dir}/"):
                marks.append(Mark(target.group(1).rsplit("/", 1)[1].split("-", 1)[1],
                                  unsynced, syncs))
            continue
        fd = _FD.match(rest)
        if fd is None or fd.group(2) != wal:
            continue
        if name in ("fsync", "fdatasync"):
            unsynced, syncs = False, syncs + 1  # per file, whichever descriptor wrote
        else:
            unsynced = True
    return marks, proc.stdout.decode()


def syncs_between(marks: Sequence[Mark], first: int, second: int) -> int:
    return marks[second].syncs - marks[first].syncs


def effects(marks: Iterable[Mark]) -> list[Mark]:
    """Markers where something leaves the process: host changes, settles, exit statuses."""
    return [m for m in marks if m.name.split("-")[0] in ("effect", "settle", "exit")]


def test_only_writes_marked_relaxed_skip_the_fsync(tmp_path: Path) -> None:
    marks, _ = traced(tmp_path, "store-calls", tmp_path / "ledger.sqlite3")

    names = [m.name for m in marks]
    assert len(names) == 56 and names[0] == "before-durable-begin_message"
    seen = {}
    for i in range(0, len(marks), 2):
        call = marks[i].name.removeprefix("before-")
        assert marks[i + 1].name == f"after-{call}"
        seen.setdefault(call, set()).add(syncs_between(marks, i, i + 1))
    # Durable by default (every write not marked otherwise), one fsync each; relaxed: none.
    assert {c: s for c, s in seen.items() if c.startswith("durable-")} == {
        c: {1} for c in seen if c.startswith("durable-")}
    assert {c: s for c, s in seen.items() if c.startswith("relaxed-")} == {
        c: {0} for c in seen if c.startswith("relaxed-")}
    assert seen["barrier-after-relaxed"] == {1}
    assert seen["barrier-with-nothing-pending"] == {0}
    assert seen["barrier-after-durable-only"] == {0}
    after_barrier = names.index("after-barrier-after-relaxed")
    assert marks[after_barrier - 1].unsynced and not marks[after_barrier].unsynced


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_pass_syncs_before_every_host_change_and_every_settle(
        tmp_path: Path, protocol: str) -> None:
    db = tmp_path / "ledger.sqlite3"

    marks, out = traced(tmp_path, "pass", db, protocol)

    # The reply is from someone other than the requester: an internal note on its ticket.
    assert json.loads(out) == {"fetched": 5, "ticketed": 2, "noted": 1, "failed": 1,
                               "duplicate": 1}
    outside = effects(marks)
    assert [m.name for m in outside if m.name.startswith("effect")] == [
        "effect-create", "effect-comment", "effect-create"]
    settles = [m for m in outside if m.name.startswith("settle")]
    assert len(settles) == (4 if protocol == "imap" else 5)
    unsafe = [m.name for m in outside if m.unsynced]
    assert unsafe == [], f"log bytes not yet on disk when the world was told: {unsafe}"
    # Each message is written three or four times (received, described, pushing, done), but
    # only the PUSHING record before a host call is fsync'd; then one barrier per batch of
    # settles (a batch is 2 here), the mailbox mark of a first pass and the account's health.
    start = next(i for i, m in enumerate(marks) if m.name == "pass-start")
    end = next(i for i, m in enumerate(marks) if m.name == "pass-end")
    batches = 3
    assert syncs_between(marks, start, end) == 3 + batches + 2
    store = SQLiteStore(db)
    states = sorted(r.state.value for r in store.messages())
    store.close()
    assert states == ["done", "done", "done", "failed", "ignored"]


def test_a_new_process_syncs_its_predecessors_commits_before_moving_their_mail(
        tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(db)
    config = account()
    pipeline = Pipeline(config, HOST, store, MemoryHost())  # type: ignore[arg-type]
    box = MarkedMailbox(MAILS, None, keep=True)  # "killed" before the server moved anything
    AccountPoller(config, store, pipeline, mailbox_factory=lambda a: box).poll()
    store.close()

    marks, out = traced(tmp_path, "settle-only", db)

    assert json.loads(out) == {}  # nothing processed again: only moved
    settles = [i for i, m in enumerate(marks) if m.name.startswith("settle")]
    assert [marks[i].name for i in settles] == ["settle-processed", "settle-processed",
                                                "settle-error", "settle-processed"]
    # This process committed nothing of its own before the first move, yet the log is
    # synced first: what it moves rests on commits it cannot know are on disk.
    assert syncs_between(marks, 0, settles[0]) >= 1
    assert not any(marks[i].unsynced for i in settles)


@pytest.mark.parametrize("command", ["deliver", "import"])
def test_deliver_and_import_sync_before_reporting_success(tmp_path: Path, command: str) -> None:
    db = tmp_path / "ledger.sqlite3"
    SQLiteStore(db).close()  # the file a running bridge would have
    config = tmp_path / "config.yaml"
    (tmp_path / "pw").write_text("p\n")
    (tmp_path / "secret").write_text("s\n")
    config.write_text(json.dumps({
        "store": {"path": str(db)},
        "host": {"type": "zendesk", "url": "https://acme.zendesk.com",
                 "auth": {"type": "oauth", "client_id": "c",
                          "client_secret_file": str(tmp_path / "secret")}},
        "accounts": [{"name": "support", "protocol": "imap", "host": "127.0.0.1",
                      "port": 1, "security": "none", "username": "u",
                      "password_file": str(tmp_path / "pw")}]}))
    paths: list[str] = []
    if command == "import":
        for ref in ("r1", "r4"):
            (tmp_path / f"{ref}.eml").write_bytes(MAILS[ref])
            paths.append(str(tmp_path / f"{ref}.eml"))

    marks, _ = traced(tmp_path, "cli", db, str(config), command, *paths)

    names = [m.name for m in marks]
    assert names == ["effect-create"] * len(paths or ["r1"]) + ["exit-0"]
    assert not marks[-1].unsynced, "exit 0 reported while ledger writes were not on disk"
    store = SQLiteStore(db)
    assert [r.state for r in store.messages()] == [MessageState.DONE] * len(paths or [1])
    store.close()


def test_commits_without_fsync_survive_sigkill(tmp_path: Path) -> None:
    """What the prefix argument starts from: a SIGKILL loses no commit, fsync'd or not."""
    db = tmp_path / "ledger.sqlite3"
    proc = subprocess.run(child_cmd("sigkill", db, tmp_path / "marks"), capture_output=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")

    store = SQLiteStore(db)
    [record] = store.messages()
    assert (record.state, record.ticket_id) == (MessageState.DONE, "9")
    assert store.ticket_for_message_ids(["k1@x"]) == "9"
    store.close()


# -- the barrier's cost, in process -------------------------------------------------------------


class Statements:
    """The statements a connection runs (its trace callback)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.seen: list[str] = []
        db.set_trace_callback(self.seen.append)

    def commits(self) -> int:
        count = sum(s.strip().upper() == "COMMIT" for s in self.seen)
        self.seen.clear()
        return count


def test_barrier_commits_only_when_something_may_be_unsynced(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(db)
    seen = Statements(store._db)
    store.make_durable()
    assert seen.commits() == 1  # first barrier of a process: whatever the log holds
    store.make_durable()
    assert seen.commits() == 0
    record = store.begin_message("acc", "r1", sha256=None)  # durable
    seen.commits()
    store.make_durable()
    assert seen.commits() == 0
    store.record_failure(record.id, "x", durable=False)
    seen.commits()
    store.make_durable()
    assert seen.commits() == 1

    other = SQLiteStore(db)  # another process's connection, say: its commit may be unsynced
    other.begin_message("acc", "r2", sha256=None, durable=False)
    store.make_durable()
    assert seen.commits() == 1
    store.make_durable()
    assert seen.commits() == 0
    other.close()
    store.close()


def test_barrier_writes_a_new_value_each_time(tmp_path: Path) -> None:
    """A durable commit that changes nothing syncs nothing (seen in the strace test above),
    so each barrier must really change its row."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    values = []
    for n in range(3):
        store.begin_message("acc", f"r{n}", sha256=None, durable=False)
        store.make_durable()
        values.append(store._query("SELECT value FROM meta WHERE key = 'durable'")[0]["value"])
    assert len(set(values)) == 3
    store.close()


# -- one log line per mail ----------------------------------------------------------------------


def test_one_info_line_per_mail_with_its_outcome(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    config = account()
    pipeline = Pipeline(config, HOST, store, MemoryHost())  # type: ignore[arg-type]
    box = MarkedMailbox(MAILS, None)
    with caplog.at_level(logging.INFO, logger="connector"):
        AccountPoller(config, store, pipeline, mailbox_factory=lambda a: box).poll()
    store.close()

    lines = [r for r in caplog.records if r.name == "connector.pipeline"]
    by_ref = {ref: [r for r in lines if f" ref={ref}" in r.getMessage()] for ref in MAILS}
    assert {ref: len(found) for ref, found in by_ref.items()} == dict.fromkeys(MAILS, 1)
    assert [by_ref[ref][0].levelno for ref in MAILS] == [
        logging.INFO, logging.INFO, logging.ERROR, logging.INFO, logging.INFO]
    first = by_ref["r1"][0].getMessage()
    assert first.startswith("account=support ref=r1 message-id=<d1@example.com>: ticketed, "
                            "ticket #1001 (decision new_ticket: ")
    assert "duplicate, ticket #1001" in by_ref["r5"][0].getMessage()
    assert "failed (" in by_ref["r3"][0].getMessage()
    assert "not a mail" in by_ref["r3"][0].getMessage()
