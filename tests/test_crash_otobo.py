"""The crash test (tests/test_crash.py) with OTOBO/Znuny as the host: SIGKILL the bridge at
random points and inside "committed on the host but not recorded" windows while it ingests a
corpus from a real Dovecot into the GenericInterface double (tests/otobo_double.py, its own
process), restart it, and in the end every mail is exactly one ticket or one article.

OTOBO has no idempotency key, so what is proven here is the other mechanism: the external id in
the ``PMBMessageID`` dynamic field, searched before every create (first try, in-process retry,
resume after a kill), the ``PMBArticleKey`` article field for comments, and the completion of a
ticket whose create stopped between ticket and article. The checks on host and ledger are the
Zendesk test's own (``check_host``, ``check_ledger``), fed with the double's tickets shown in
the Zendesk double's shape by :class:`ZendeskShaped`.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from crash_corpus import SUPPORT_ADDRESS, make_corpus
from dovecot import DovecotServer, MailUser
from otobo_double import OtoboDouble
from test_crash import (
    ACCOUNT,
    HOLD_SECONDS,
    HOST_TIMEOUT,
    RANDOM_ADVANCE,
    RANDOM_DELAY,
    WINDOW_WAIT,
    KillPoint,
    check_host,
    check_ledger,
    final_passes,
    inbox_count,
    kill_once,
    ledger_rows,
)

from connector.store.base import MessageState
from connector.store.sqlite import SQLiteStore

CORPUS_SIZE = 120
KILLS = 12
CREATE_PATH = r"/Ticket$"
UPDATE_PATH = r"/Ticket/\d+$"

#: Faults the adapter absorbs in-process; the "between" one is OTOBO's non-atomic create.
SIDE_FAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("create answer dropped after commit",
     {"path_regex": CREATE_PATH, "method": "POST", "when": "after", "drop": True}),
    ("create answered 500 after commit",
     {"path_regex": CREATE_PATH, "method": "POST", "when": "after", "status": 500}),
    ("create stopped between ticket and article",
     {"path_regex": CREATE_PATH, "method": "POST", "between": "ticket_and_article"}),
    ("comment answer dropped after commit",
     {"path_regex": UPDATE_PATH, "method": "PATCH", "when": "after", "drop": True}),
    ("session expired",
     {"path_regex": "^$", "method": "NONE"}),  # stands for expire_sessions(), see below
    ("create refused 503",
     {"path_regex": CREATE_PATH, "method": "POST", "status": 503, "when": "before"}),
)


def _text(article: dict[str, Any]) -> str:
    body = article["Body"]
    return re.sub(r"<[^>]+>", "", body) if article["ContentType"].startswith("text/html") \
        else body


class ZendeskShaped:
    """The OTOBO double's tickets in the shape test_crash's checks read."""

    def __init__(self, double: OtoboDouble) -> None:
        self.double = double

    def tickets(self) -> list[dict[str, Any]]:
        out = []
        for t in self.double.tickets():
            fields = {f["Name"]: f["Value"] for f in t["DynamicField"]}
            comments = [{
                "plain_body": _text(a), "public": a["IsVisibleForCustomer"] == 1,
                "key": next((f["Value"] for f in a["DynamicField"]
                             if f["Name"] == "PMBArticleKey"), None),
                "attachments": [{"file_name": x["Filename"], "sha256": hashlib.sha256(
                    base64.b64decode(x["Content"])).hexdigest()} for x in a["Attachment"]],
            } for a in t["Article"]]
            out.append({"id": int(t["TicketNumber"]), "external_id": fields.get("PMBMessageID"),
                        "comments": comments})
        return out


def write_config(tmp_path: Path, dovecot: DovecotServer, user: MailUser,
                 double: OtoboDouble) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "imap").write_text(user.password)
    data = {
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        # One mail at a time: the aimed kills below name the one request in flight.
        "host": {**double.host_config(secrets / "otobo"), "timeout": HOST_TIMEOUT,
                 "max_in_flight": 1},
        "accounts": [{
            "name": ACCOUNT, "protocol": "imap", "host": "127.0.0.1", "security": "none",
            "port": dovecot.imap_port, "username": user.name,
            "password_file": str(secrets / "imap"), "own_addresses": [SUPPORT_ADDRESS],
            "timeout": 10, "batch_size": 20, "poll_interval": 0.003,
        }],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_committed_not_recorded(view: ZendeskShaped, db: Path, fault_id: int, proc: Any,
                                mode: str) -> tuple[str, str | None]:
    deadline = time.monotonic() + WINDOW_WAIT
    import json

    while time.monotonic() < deadline and proc.poll() is None:
        if any(f["id"] == fault_id and f["hits"] for f in view.double.faults()):
            for row in ledger_rows(db):
                if row["state"] != MessageState.PUSHING.value or not row["pending"]:
                    continue
                pending = json.loads(row["pending"])
                tickets = view.tickets()
                if mode == "create-in-flight" and row["action"] == "new_ticket":
                    if any(t["external_id"] == pending["external_id"] for t in tickets):
                        return "ticket created, ledger PUSHING", pending["external_id"]
                if mode == "comment-in-flight" and row["action"] != "new_ticket":
                    key = pending.get("comment_key")
                    if key and any(c["key"] == key for t in tickets for c in t["comments"]):
                        return "article added, ledger PUSHING", key
        time.sleep(0.02)
    return "window not reached", None


def crash_phase(rng: random.Random, view: ZendeskShaped, dovecot: DovecotServer,
                user: MailUser, config: Path, tmp_path: Path) -> list[KillPoint]:
    db = tmp_path / "ledger.sqlite3"
    double = view.double
    kills: list[KillPoint] = []
    for run in range(KILLS):
        mode = rng.choices(["random", "create-in-flight", "comment-in-flight"],
                           weights=[5, 3, 2])[0]
        point = KillPoint(run, mode)
        fault_id = None
        if mode == "random":
            point.advance = rng.randint(*RANDOM_ADVANCE)
            point.delay = rng.uniform(*RANDOM_DELAY)
            if rng.random() < 0.7:
                point.fault, spec = rng.choice(SIDE_FAULTS)
                if spec["method"] == "NONE":
                    double.expire_sessions()
                else:
                    double.inject(**spec)
        else:
            path, method = (CREATE_PATH, "POST") if mode == "create-in-flight" \
                else (UPDATE_PATH, "PATCH")
            point.fault = f"answer held {HOLD_SECONDS:.0f}s after commit"
            fault_id = double.inject(path_regex=path, method=method, when="after",
                                     delay=HOLD_SECONDS)["id"]
        held = fault_id
        kill_once(point, held, config, tmp_path, lambda: inbox_count(dovecot, user),
                  lambda proc, held=held, mode=mode:
                  wait_committed_not_recorded(view, db, held, proc, mode))
        double.clear_faults()
        kills.append(point)
        if point.inbox == 0:
            break
    return kills


@pytest.mark.parametrize("seed", [pytest.param(1606, id="seed1606-otobo")])
def test_sigkill_during_ingest_into_otobo_loses_and_duplicates_nothing(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, seed: int) -> None:
    corpus = make_corpus(seed, CORPUS_SIZE)
    print(f"\ncrash test on OTOBO {corpus.describe()}", flush=True)
    dovecot.append(mailbox_user, corpus.raws())
    with OtoboDouble(tmp_path / "otobo.json") as double:
        view = ZendeskShaped(double)
        config = write_config(tmp_path, dovecot, mailbox_user, double)
        kills = crash_phase(random.Random(seed), view, dovecot, mailbox_user, config, tmp_path)
        died = [k.run for k in kills if k.exit_code is not None]
        assert not died, "bridge runs ended by themselves: " + "; ".join(
            f"run {n}: {(tmp_path / f'bridge-run{n:02d}.log').read_text()[-1500:]}"
            for n in died)
        final_passes(config, tmp_path, lambda: inbox_count(dovecot, mailbox_user))

        assert dovecot.list_folder(mailbox_user, "INBOX") == []
        assert dovecot.list_folder(mailbox_user, "Error") == []
        processed = Counter(m.raw for m in dovecot.list_folder(mailbox_user, "Processed"))
        assert processed == Counter(corpus.raws()), "Processed does not hold every delivery"
        ticket_of_root = check_host(corpus, view)  # type: ignore[arg-type]
        store = SQLiteStore(tmp_path / "ledger.sqlite3")
        try:
            check_ledger(corpus, store.messages(ACCOUNT), ticket_of_root)
        finally:
            store.close()
        tickets = view.tickets()
        for point in kills:
            if point.pending_key is None:
                continue
            if point.mode == "create-in-flight":
                found = [t for t in tickets if t["external_id"] == point.pending_key]
                assert len(found) == 1, f"run {point.run}: {len(found)} tickets for the key"
            else:
                written = [c for t in tickets for c in t["comments"]
                           if c["key"] == point.pending_key]
                assert len(written) == 1, f"run {point.run}: article written {len(written)}x"
        print(f"seed {seed}: {len(kills)} kills "
              f"({sum(1 for k in kills if k.pending_key)} in a committed-but-unrecorded "
              f"window), {len(ticket_of_root)} tickets, 0 duplicates", flush=True)
