"""SIGTERM (issue 6): ``postmaster-bridge run`` as a real process, stopped with SIGTERM in the
middle of a batch while Zendesk is slow, exits 0 promptly having finished the message in hand;
``run --once`` then does the rest, and every mail is exactly one ticket, none lost.

Zendesk is the test double in its own process (tests/zendesk_double.py), since `responses` does
not cross processes; each ticket create is answered 0.25 s after the double committed it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from dovecot import DovecotServer, MailUser
from zendesk_double import ZendeskDouble
from zendesk_responses import customer_mail

REPO = Path(__file__).resolve().parents[1]
CREATE = r"^/api/v2/tickets$"
MAILS = 24


def write_config(tmp_path: Path, dovecot: DovecotServer, user: MailUser,
                 zd: ZendeskDouble) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "imap").write_text(user.password)
    (secrets / "zendesk").write_text(zd.api_token)
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "zendesk", "url": zd.url, "timeout": 10, "max_attempts": 3,
                 "auth": {"type": "api_token", "email": zd.email,
                          "api_token_file": str(secrets / "zendesk")}},
        "accounts": [{
            "name": "support", "protocol": "imap", "host": dovecot.host,
            "port": dovecot.imap_port, "security": "none", "username": user.name,
            "password_file": str(secrets / "imap"), "timeout": 10,
            "poll_interval": 0.01, "own_addresses": ["support@example.com"],
        }],
    }, sort_keys=False))
    return config


def bridge_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "connector.cli", "--config", str(config), "run", *extra]


def bridge_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def ledger(db: Path, sql: str) -> list[Any]:
    """Read the ledger as another process does (WAL: never blocks the bridge)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return []
    finally:
        conn.close()


def wait_for(proc: subprocess.Popen[bytes], predicate: Any, what: str,
             timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the bridge exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigterm_mid_batch_loses_nothing_and_run_once_finishes(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
) -> None:
    mails = [customer_mail(f"Lotto {n}", f"sigterm{n}@example.org") for n in range(MAILS)]
    dovecot.append(mailbox_user, mails)
    db = tmp_path / "ledger.sqlite3"
    log = tmp_path / "run.log"

    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        config = write_config(tmp_path, dovecot, mailbox_user, zd)
        # Slow creates: committed at once, answered 0.25 s later.
        zd.inject(CREATE, None, method="POST", count=-1, delay=0.25, when="after")
        with open(log, "wb") as out:
            proc = subprocess.Popen(bridge_command(config), cwd=REPO, env=bridge_env(),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            wait_for(proc, lambda: len(ledger(db, "SELECT id FROM messages WHERE state = "
                                              "'done'")) >= 3, "three recorded mails")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)  # the message in hand (<= 0.25 s), then out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        output = log.read_text(errors="replace")
        assert code == 0, output[-3000:]
        assert "finishing the current message, then stopping" in output

        # Nothing half done: every record is finished, its ticket exists, its mail moved.
        states = Counter(state for (state,) in ledger(db, "SELECT state FROM messages"))
        done = states["done"]
        assert states == Counter({"done": done}), states
        assert 3 <= done < MAILS, "the stop did not land inside the batch"
        assert len(zd.tickets()) == done
        assert len(dovecot.list_folder(mailbox_user, "Processed")) == done
        assert len(dovecot.list_folder(mailbox_user)) == MAILS - done

        zd.clear_faults()
        second = subprocess.run(bridge_command(config, "--once"), cwd=REPO, env=bridge_env(),
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert second.returncode == 0, second.stderr.decode(errors="replace")[-3000:]
        summaries = [line for line in second.stderr.decode().splitlines()
                     if line.startswith("support: ")]
        assert len(summaries) == 1 and summaries[0].startswith(
            f"support: fetched={MAILS - done} ticketed={MAILS - done} ")

        tickets = zd.tickets()
        assert sorted(t["subject"] for t in tickets) == sorted(f"Lotto {n}"
                                                               for n in range(MAILS))
        assert len({t["external_id"] for t in tickets}) == MAILS
        creates = [r for r in zd.requests_log() if r["method"] == "POST"
                   and r["path"] == "/api/v2/tickets" and r["status"] == 201]
        assert len(creates) == MAILS  # none sent twice

    assert dovecot.list_folder(mailbox_user) == []
    assert dovecot.list_folder(mailbox_user, "Error") == []
    assert Counter(m.raw for m in dovecot.list_folder(mailbox_user, "Processed")) == \
        Counter(mails)
    rows = ledger(db, "SELECT state, ticket_id FROM messages")
    assert len(rows) == MAILS
    assert {state for state, _ in rows} == {"done"}
    assert len({ticket for _, ticket in rows}) == MAILS


def test_sigterm_while_idle_exits_0(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite3"
    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        config = write_config(tmp_path, dovecot, mailbox_user, zd)
        proc = subprocess.Popen(bridge_command(config), cwd=REPO, env=bridge_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            wait_for(proc, lambda: ledger(db, "SELECT id FROM comm_log WHERE event = 'fetch'"),
                     "the first pass")
            time.sleep(0.3)  # into the IDLE wait
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert code == 0, proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        assert zd.tickets() == []
