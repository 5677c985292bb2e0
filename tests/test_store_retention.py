"""Ledger retention: finished mails keep only what later mails need.

Measured on a real SQLite ledger filled by ``import`` through the Zendesk fake: after
retention and ``VACUUM`` the ledger holds at most 1.5 kB per mail, and what later mails need
(dedupe, threading by Message-ID, the per-sender counts) still works.
"""

from __future__ import annotations

import mailbox
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge_cli import run_cli as run
from dovecot import DovecotServer, MailUser
from zendesk_responses import FakeZendesk, account, customer_mail, write_config

from connector.config import load_config
from connector.store.base import MessageState
from connector.store.sqlite import SQLiteStore

MAILS = 300
BODY = ("Buongiorno,\n\nvi scrivo perché la stampante del secondo piano non stampa più da "
        "ieri mattina. Abbiamo provato a riavviarla ma il problema resta.\n\n") * 12
PAGE = "<html><body>" + "".join(f"<p>{line}</p>" for line in BODY.splitlines() if line) + \
       "</body></html>"


def test_finished_mails_shrink_to_what_later_mails_need(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    box = mailbox.mbox(tmp_path / "backlog.mbox")
    for n in range(MAILS):
        box.add(customer_mail(f"Stampante {n}", f"m{n}@example.org",
                              sender=f"Cliente {n % 19} <cliente{n % 19}@example.org>",
                              text=BODY, html=PAGE))
    box.close()
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    code, _ = run("-c", str(config), "import", str(tmp_path / "backlog.mbox"))
    assert code == 0
    empty = SQLiteStore(tmp_path / "empty.sqlite3")  # the tables themselves, no mail
    empty.vacuum()
    baseline = empty._file_size()
    empty.close()
    store = SQLiteStore(load_config(config).store.path)
    try:
        store.vacuum()
        full = (store._file_size() - baseline) / MAILS
        failed = store.messages()[0]
        store.finish_message(failed.id, MessageState.FAILED, error="kept for replay")
        later = datetime.now(UTC) + timedelta(days=1)

        thinned = store.apply_retention(later)
        store.purge_log(later)
        _, after = store.vacuum()

        assert thinned == MAILS - 1
        per_mail = (after - baseline) / MAILS
        print(f"ledger bytes per mail: {full:.0f} before retention, {per_mail:.0f} after")
        assert per_mail <= 1536, (full, per_mail)
        assert full > 3 * per_mail  # the requests were most of it
        # What later mails need is still there.
        records = store.messages()
        assert all(r.ticket_id for r in records)
        assert store.ticket_for_message_ids(["m7@example.org"]) == records[7].ticket_id
        since = datetime.now(UTC) - timedelta(days=2)
        assert store.sender_count_since("cliente3@example.org", since) == len(range(3, MAILS, 19))
        assert store.get_message_by_id(failed.id).pending is not None  # a failure keeps all
    finally:
        store.close()

    # Importing the same backlog again after retention still makes nothing twice.
    code, _ = run("-c", str(config), "import", str(tmp_path / "backlog.mbox"))
    assert code == 0
    assert len(zendesk.ticket_list()) == MAILS


def test_store_vacuum_applies_retention_and_shrinks_the_file(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, zendesk: FakeZendesk,
) -> None:
    box = mailbox.mbox(tmp_path / "backlog.mbox")
    for n in range(40):
        box.add(customer_mail(f"Stampante {n}", f"v{n}@example.org", text=BODY, html=PAGE))
    box.close()
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          store={"path": str(tmp_path / "ledger.sqlite3"),
                                 "retention_days": 0.000001})
    assert run("-c", str(config), "import", str(tmp_path / "backlog.mbox"))[0] == 0
    time.sleep(0.2)  # every record is now older than the 0.09 s retention period

    code, lines = run("-c", str(config), "store", "vacuum")

    assert code == 0, lines
    (line,) = [x for x in lines if x.startswith("ok")]
    assert "40 finished mail(s) past" in line and " MB -> " in line
    store = SQLiteStore(load_config(config).store.path)
    try:
        assert all(r.pending is None and r.trace is None for r in store.messages())
    finally:
        store.close()
