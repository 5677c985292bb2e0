"""History import interrupted and run again: a SIGKILL while Zendesk holds back the answer to a
create_many it has already done (the crash between the job and the ledger's record), and a
Ctrl-C (SIGINT) while the call is still on its way. Running the same import again ends with
exactly one ticket per conversation and one comment per reply. Zendesk is the out-of-process
double (tests/zendesk_double.py), which keeps its tickets across the bridge's death."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
import yaml
from zendesk_double import ZendeskDouble

from connector.store.base import MessageState

REPO = Path(__file__).resolve().parents[1]
CONVERSATIONS = 12
REPLIES = 2
T0 = datetime(2023, 5, 2, 8, 0, tzinfo=UTC)
IMPORT_MANY = r"^/api/v2/imports/tickets/create_many$"
HOLD_SECONDS = 8.0


def old_mail(i: int, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Cliente {i} <cliente{i}@example.org>"
    msg["To"] = "support@acme.example"
    msg["Subject"] = ("Re: " if n else "") + f"Pratica {i}"
    msg["Date"] = format_datetime(T0 + timedelta(days=i, hours=n))
    msg["Message-ID"] = f"<c{i}-{n}@example.org>"
    if n:
        msg["In-Reply-To"] = f"<c{i}-{n - 1}@example.org>"
        msg["References"] = " ".join(f"<c{i}-{k}@example.org>" for k in range(n))
    msg.set_content(f"Messaggio {n} della pratica {i}.\n")
    return bytes(msg)


def write_inputs(tmp_path: Path, zd: ZendeskDouble) -> tuple[Path, Path]:
    box = mailbox.mbox(tmp_path / "archive.mbox")
    for i in range(CONVERSATIONS):
        for n in range(REPLIES + 1):
            box.add(old_mail(i, n))
    box.close()
    secret = tmp_path / "zendesk.secret"
    secret.write_text(zd.client_secret)
    (tmp_path / "imap.secret").write_text("unused")
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "zendesk", "url": zd.url, "timeout": 20, "max_attempts": 3,
                 "auth": {"type": "oauth", "client_id": zd.client_id,
                          "client_secret_file": str(secret)}},
        "accounts": [{"name": "archive", "protocol": "imap", "host": "127.0.0.1",
                      "security": "none", "username": "archive",
                      "password_file": str(tmp_path / "imap.secret"),
                      "own_addresses": ["support@acme.example"]}],
    }, sort_keys=False))
    return config, tmp_path / "archive.mbox"


def spawn_import(config: Path, mbox: Path, log: Path,
                 *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--config", str(config), "import",
             "--history", "--progress-interval", "0", *extra, str(mbox)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def pushing_history_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT pending FROM messages WHERE state = ?",
                                (MessageState.PUSHING.value,)).fetchall()
        except sqlite3.OperationalError:  # the schema is still being created
            return 0
    return sum(1 for (pending,) in rows if pending and json.loads(pending).get("history_import"))


def wait_for(what: str, predicate, proc: subprocess.Popen[bytes], log: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 30
    while not predicate():
        assert proc.poll() is None, f"the import ended before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["sigkill-after-zendesk-did-it", "sigint-before-zendesk-did-it"])
def test_history_import_resumes_without_duplicates(tmp_path: Path, how: str) -> None:
    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        config, mbox = write_inputs(tmp_path, zd)
        db = tmp_path / "ledger.sqlite3"
        log = tmp_path / "bridge.log"
        if how.startswith("sigkill"):
            # Zendesk does the import, then its answer is held back: the ledger never learns.
            fault = zd.inject(IMPORT_MANY, None, method="POST", when="after",
                              delay=HOLD_SECONDS)
        else:
            # The call is held on its way in, then refused: Zendesk never did anything.
            fault = zd.inject(IMPORT_MANY, 503, method="POST", delay=HOLD_SECONDS)
        proc = spawn_import(config, mbox, log)
        wait_for("the batch recorded as being sent",
                 lambda: pushing_history_rows(db) == CONVERSATIONS * (REPLIES + 1), proc, log)
        wait_for("the import call at Zendesk",
                 lambda: any(f["id"] == fault["id"] and f["hits"] for f in zd.faults()),
                 proc, log)
        if how.startswith("sigkill"):
            wait_for("Zendesk's tickets", lambda: len(zd.tickets()) == CONVERSATIONS, proc, log)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        else:
            os.kill(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=10) == 130, log.read_text()
            deadline = time.monotonic() + HOLD_SECONDS + 5  # the held call, refused at last
            while not any(r.get("status") == 503 for r in zd.requests_log()):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert zd.tickets() == []
        zd.clear_faults()
        assert pushing_history_rows(db) == CONVERSATIONS * (REPLIES + 1)

        again = spawn_import(config, mbox, log)
        assert again.wait(timeout=60) == 0, log.read_text()

        tickets = zd.tickets()
        assert len(tickets) == CONVERSATIONS, log.read_text()
        assert len({t["external_id"] for t in tickets}) == CONVERSATIONS
        for t in tickets:
            assert len(t["comments"]) == REPLIES + 1
            assert t["created_at"] == min(c["created_at"] for c in t["comments"])
        # One import done in all: the first run's (found by external_id, not sent again), or
        # the second run's (nothing had arrived).
        done = [r for r in zd.requests_log()
                if r["path"].startswith("/api/v2/imports/") and r.get("status") == 200]
        assert len(done) == 1
        with sqlite3.connect(db) as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state"))
        assert states == {MessageState.DONE.value: CONVERSATIONS * (REPLIES + 1)}


def recorded_jobs(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT pending FROM messages WHERE pending IS NOT NULL"
                                ).fetchall()
        except sqlite3.OperationalError:  # the schema is still being created
            return set()
    return {json.loads(p).get("job") for (p,) in rows} - {None}


def test_archived_history_killed_while_its_job_runs_asks_the_job(tmp_path: Path) -> None:
    """Tickets imported as closed into the archive are not listed by external_id: a crash
    while the import job runs is resolved from the job's results, recorded by its id."""
    archive = ("--status", "closed", "--archive")
    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        config, mbox = write_inputs(tmp_path, zd)
        db = tmp_path / "ledger.sqlite3"
        log = tmp_path / "bridge.log"
        fault = zd.inject(r"^/api/v2/job_statuses/", None, method="GET", when="after",
                          delay=HOLD_SECONDS)
        proc = spawn_import(config, mbox, log, *archive)
        wait_for("the job's id recorded", lambda: db.exists() and bool(recorded_jobs(db)),
                 proc, log)
        wait_for("the job polled",
                 lambda: any(f["id"] == fault["id"] and f["hits"] for f in zd.faults()),
                 proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        zd.clear_faults()
        tickets = zd.tickets()
        assert len(tickets) == CONVERSATIONS and all(t["archived"] for t in tickets)

        again = spawn_import(config, mbox, log, *archive)
        assert again.wait(timeout=60) == 0, log.read_text()

        assert len(zd.tickets()) == CONVERSATIONS, log.read_text()
        done = [r for r in zd.requests_log()
                if r["path"].startswith("/api/v2/imports/") and r.get("status") == 200]
        assert len(done) == 1
        with sqlite3.connect(db) as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state"))
        assert states == {MessageState.DONE.value: CONVERSATIONS * (REPLIES + 1)}
