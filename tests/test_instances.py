"""Several instances on one store (issue 17's proof): three real ``postmaster-bridge run``
processes share 12 IMAP accounts on one Dovecot and a 600-mail corpus, with the ledger in a
private PostgreSQL (as on several machines; a smaller run shares one SQLite file, as on one
machine), while the test SIGKILLs
one of them at random moments and restarts it a little later. In the end no mail is lost, none
is a second ticket or comment (the Zendesk double, its own process, keeps every request),
every mailbox is drained, and a PEC reply an agent asked for during the kills went out exactly
once (aiosmtpd), whichever instance received its webhook and whichever processed it.

The instances trust only lease expiry here (``leases.local_liveness: false``), as instances on
different machines would: a killed instance's accounts are taken over once its leases ran out
by the ledger's clock. The kill plan and each takeover are printed; the seed reproduces the
plan (timing still varies). Nothing is asserted about durations: the test counts events.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from crash_corpus import SUPPORT_ADDRESS, Corpus, CorpusMessage, make_corpus
from dovecot import DovecotServer, MailUser, free_port
from dovecot import TestPki as Pki
from smtp_server import SmtpTestServer
from test_crash import check_host, check_ledger, sigkill
from zendesk_double import ZendeskDouble

from connector.config import load_config
from connector.outbound.queue import JobState
from connector.outbound.zendesk_signature import format_timestamp, sign
from connector.store.base import MessageState, Store
from connector.store.factory import open_queue, open_store

REPO = Path(__file__).resolve().parents[1]
SEED = 1717
ACCOUNTS = 12
INSTANCES = 3
#: engine -> distinct mails (the corpus adds 8 second deliveries) and kills. The whole proof
#: on PostgreSQL; SQLite shares the logic, so a shorter run shows it on that engine too.
RUNS = {"postgresql": (592, 6), "sqlite": (192, 3)}
TTL = 3.0  # seconds: leases.ttl, so takeovers come within the test's kill rhythm
PEC_FROM = "assistenza@pec.example.it"
HOOK_SECRET = "instances-hook-secret-5512"
SETTLE_TIMEOUT = 240.0  # generous: a guard against a hang, not a performance bound


def account_name(n: int) -> str:
    return f"box{n:02d}"


def spread(corpus: Corpus) -> dict[int, list[CorpusMessage]]:
    """Deliveries per account, a whole conversation in one mailbox and in corpus order (a
    reply is always delivered after what it answers, as the single-account crash test)."""
    roots = sorted({m.root for m in corpus.messages})
    home = {root: i % ACCOUNTS for i, root in enumerate(roots)}
    boxes: dict[int, list[CorpusMessage]] = {n: [] for n in range(ACCOUNTS)}
    for message in corpus.deliveries:
        boxes[home[message.root]].append(message)
    return boxes


def write_configs(tmp_path: Path, dovecot: DovecotServer, users: list[MailUser],
                  zd: ZendeskDouble, smtp: SmtpTestServer, dsn: str | None, *,
                  count: int = INSTANCES) -> list[Path]:
    """One config per instance: the same store, accounts and helpdesk, its own HTTP port."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    store: dict[str, Any] = {"path": str(tmp_path / "ledger.sqlite3")}
    if dsn is not None:
        (secrets / "dsn").write_text(dsn)
        store = {"type": "postgresql", "dsn_file": str(secrets / "dsn"), "pool_size": 4}
    (secrets / "zendesk").write_text(zd.api_token)
    (secrets / "pec-pw").write_text("pec-pw")
    (secrets / "hook").write_text(HOOK_SECRET)
    accounts: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        (secrets / f"imap{n}").write_text(user.password)
        account: dict[str, Any] = {
            "name": account_name(n), "protocol": "imap", "host": "127.0.0.1",
            "security": "none", "port": dovecot.imap_port, "username": user.name,
            "password_file": str(secrets / f"imap{n}"), "batch_size": 20,
            "poll_interval": 0.01, "timeout": 10, "own_addresses": [SUPPORT_ADDRESS]}
        if n == 0:
            account["outbound"] = {
                "from_address": PEC_FROM,
                "smtp": {"host": smtp.host, "port": smtp.port, "security": "starttls",
                         "username": PEC_FROM, "password_file": str(secrets / "pec-pw"),
                         "ca_file": str(smtp.ca_file), "timeout": 5}}
        accounts.append(account)
    paths = []
    for i in range(count):
        path = tmp_path / f"instance{i}.yaml"
        path.write_text(yaml.safe_dump({
            "store": store,
            "leases": {"ttl": TTL, "local_liveness": False},
            # A generous read timeout: on a loaded machine the double can take seconds, and
            # a comment request that times out while the double still works on it can land
            # twice (the adapter's look-before-retry races it; the crash test's business).
            "host": {"type": "zendesk", "url": zd.url, "timeout": 60, "max_attempts": 4,
                     "auth": {"type": "api_token", "email": zd.email,
                              "api_token_file": str(secrets / "zendesk")}},
            "service": {"public_url": "https://bridge.example.it", "host": "127.0.0.1",
                        "port": free_port(), "signing_secret_file": str(secrets / "hook"),
                        "parse_workers": 0},
            "accounts": accounts,
        }, sort_keys=False))
        paths.append(path)
    return paths


class Instance:
    """One ``postmaster-bridge run`` process, killed and started again by the test."""

    def __init__(self, index: int, config: Path, tmp_path: Path) -> None:
        self.index = index
        self.config = config
        self.port = int(yaml.safe_load(config.read_text())["service"]["port"])
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        log = self.tmp_path / f"instance{self.index}-run{self.runs}.log"
        self.runs += 1
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(self.config), "run"],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        assert self.proc is not None
        code = sigkill(self.proc)
        self.proc = None
        return code

    def stop(self) -> int | str:
        """SIGTERM: finish the mail in hand, hand every lease back, exit. One that does not
        exit is killed and reported in the returned code, so that a teardown stops every
        instance (none left running after the test) and the caller's assertion says which."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)  # a paused one, if an assertion left it so
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            return "did not exit within 60 s of SIGTERM"
        finally:
            if self.proc.poll() is None:
                sigkill(self.proc)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp_path.glob(f"instance{self.index}-run*.log")))


def inbox_counts(dovecot: DovecotServer, users: list[MailUser]) -> list[int]:
    counts = []
    for user in users:
        with dovecot.session(user) as client:
            counts.append(int(client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]))
    return counts


def finished(store: Store) -> int:
    return sum(1 for record in store.messages() if record.state.terminal)


def held_by(store: Store, instance: Instance) -> list[str]:
    """The live leases whose holder is ``instance``'s process (HOST:PID:NONCE)."""
    assert instance.proc is not None
    return [lease.resource for lease in store.leases()
            if lease.live and lease.holder.split(":")[1] == str(instance.proc.pid)]


def pause_between_calls(instance: Instance, store: Store, sqlite_file: Path | None) -> bool:
    """SIGSTOP ``instance``; True when no helpdesk call of its accounts was under way then
    (no PUSHING record: one is committed before every call) and, on SQLite, it holds no
    write transaction (a frozen holder of the file's write lock stops every instance; on
    PostgreSQL the server ends such a session), else SIGCONT and False."""
    assert instance.proc is not None
    os.kill(instance.proc.pid, signal.SIGSTOP)
    accounts = {r.split(":", 1)[1] for r in held_by(store, instance) if ":" in r}
    quiet = not any(r.account in accounts and r.state == MessageState.PUSHING
                    for r in store.messages())
    if quiet and sqlite_file is not None:
        probe = sqlite3.connect(sqlite_file, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            quiet = False
        finally:
            probe.close()
    if not quiet:
        os.kill(instance.proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    return quiet


def wait_for(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached: {what}")


def ask_for_a_pec_reply(zd: ZendeskDouble, reply_tag: str) -> int:
    """What an agent does on a PEC ticket of its own (not one of the corpus's): a public
    reply, and the macro's reply tag. Returns the ticket's id."""
    session = requests.Session()
    session.trust_env = False
    auth = (f"{zd.email}/token", zd.api_token)
    me = session.get(f"{zd.url}/api/v2/users/me", auth=auth, timeout=60).json()["user"]
    created = session.post(f"{zd.url}/api/v2/tickets", auth=auth, timeout=60, json={
        "ticket": {"subject": "Richiesta certificato",
                   "comment": {"body": "Vorrei il certificato."},
                   "requester": {"email": "mario.rossi@pec.example.it", "name": "Mario Rossi"},
                   "tags": ["pec_connector"]}})
    created.raise_for_status()
    ticket_id = int(created.json()["ticket"]["id"])
    resp = session.put(f"{zd.url}/api/v2/tickets/{ticket_id}", auth=auth, timeout=60,
                       json={"ticket": {"comment": {"body": "Risposta dell'agente via PEC.",
                                                    "public": True, "author_id": me["id"]},
                                        "additional_tags": [reply_tag]}})
    resp.raise_for_status()
    return ticket_id


class CorpusTickets:
    """The double's tickets but the PEC reply's own, for the corpus checks."""

    def __init__(self, zd: ZendeskDouble, other: int | None) -> None:
        self.zd, self.other = zd, other

    def tickets(self) -> list[dict[str, Any]]:
        return [t for t in self.zd.tickets() if t["id"] != self.other]

    def state(self) -> dict[str, Any]:
        return self.zd.state()


def post_webhook(instance: Instance, ticket_id: int, account: str) -> int:
    """Zendesk's trigger calling the bridge's webhook on ``instance``."""
    body = json.dumps({"ticket_id": str(ticket_id), "account": account, "v": 1}).encode()
    ts = format_timestamp(datetime.now(UTC))
    conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=60)
    try:
        conn.request("POST", f"/hooks/zendesk/{account}", body=body, headers={
            "Content-Type": "application/json",
            "X-Zendesk-Webhook-Signature": sign(HOOK_SECRET, ts, body),
            "X-Zendesk-Webhook-Signature-Timestamp": ts,
            "X-Zendesk-Webhook-Invocation-Id": "01HINSTANCES0001"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("engine", list(RUNS))
def test_three_instances_with_kills_lose_and_duplicate_nothing(
        dovecot: DovecotServer, tmp_path: Path, pki: Pki, engine: str,
        request: pytest.FixtureRequest) -> None:
    mails, kills_planned = RUNS[engine]
    corpus = make_corpus(SEED, mails)
    print(f"\ninstances test on {engine}: {corpus.describe()}; {ACCOUNTS} accounts, "
          f"{INSTANCES} instances, ttl {TTL}s", flush=True)
    dsn = None
    if engine == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        # What README "Running several instances" asks of the server: a transaction left
        # open by a frozen instance ends soon, and with it the locks it held.
        database = dsn.rsplit("/", 1)[1].split("?")[0]
        request.getfixturevalue("postgres").admin_sql(
            f"ALTER DATABASE {database} SET idle_in_transaction_session_timeout = '5s'")
    users = [dovecot.add_user() for _ in range(ACCOUNTS)]
    boxes = spread(corpus)
    for n, user in enumerate(users):
        dovecot.append(user, [m.raw for m in boxes[n]])
    rng = random.Random(SEED)
    with ZendeskDouble(tmp_path / "zendesk.json") as zd, \
            SmtpTestServer(pki, mode="starttls", username=PEC_FROM, password="pec-pw") as smtp:
        configs = write_configs(tmp_path, dovecot, users, zd, smtp, dsn)
        store_config = load_config(configs[0]).store
        db = open_store(store_config)  # the test's own look at the shared store
        instances = [Instance(i, path, tmp_path) for i, path in enumerate(configs)]
        reply_tag = "pec_connector_reply_" + account_name(0)
        try:
            for instance in instances:
                instance.start()
            wait_for(lambda: finished(db) >= 20, "first mails recorded", 60)

            # A pause first (SIGSTOP: a long GC, a frozen VM): its accounts are taken over
            # once its leases ran out, and when it comes back it must not record anything
            # under them: the fence refuses, it drops them and takes its share again.
            paused = rng.choice(instances)
            assert paused.proc is not None
            wait_for(lambda: len(held_by(db, paused)) >= 2, "accounts to pause with", 60)
            # Frozen between helpdesk calls, not inside one: a call the freeze interrupts
            # lands whenever the process wakes, after its successor looked for it (README
            # "Running several instances" says what that window can cost).
            sqlite_file = None if dsn is not None else tmp_path / "ledger.sqlite3"
            wait_for(lambda: pause_between_calls(paused, db, sqlite_file),
                     "a pause between calls", 60)
            wait_for(lambda: not held_by(db, paused) and sum(
                lease.live and lease.resource.startswith("account:") for lease in db.leases())
                == ACCOUNTS, "the paused instance's accounts taken over", 120)
            os.kill(paused.proc.pid, signal.SIGCONT)
            print(f"instance {paused.index} paused until its accounts were taken over "
                  f"({finished(db)} finished mails)", flush=True)

            kills: list[str] = []
            asked: int | None = None
            for k in range(kills_planned):
                target = finished(db) + rng.randint(20, 60)
                wait_for(lambda t=target: finished(db) >= t or not any(inbox_counts(
                    dovecot, users)), "progress before a kill", 60)
                victim = rng.choice([i for i in instances if i.alive])
                time.sleep(rng.uniform(0.0, 0.5))
                code = victim.kill()
                assert code is None, f"instance {victim.index} had exited by itself " \
                    f"({code}):\n{victim.logs()[-3000:]}"
                kills.append(f"kill {k}: instance {victim.index} at {finished(db)} "
                             "finished mails")
                print(kills[-1], flush=True)
                if k == kills_planned // 2:
                    # A PEC reply asked for while an instance is down: its webhook goes to a
                    # live one; whoever claims the job sends it.
                    asked = ask_for_a_pec_reply(zd, reply_tag)
                    receiver = rng.choice([i for i in instances if i.alive])
                    assert post_webhook(receiver, asked, account_name(0)) == 202
                    print(f"PEC reply for ticket #{asked} asked through instance "
                          f"{receiver.index}", flush=True)
                # Restarted after a while: its accounts may have been taken over meanwhile.
                time.sleep(rng.uniform(0.5, TTL + 1.0))
                victim.start()

            wait_for(lambda: not any(inbox_counts(dovecot, users)), "every inbox drained",
                     SETTLE_TIMEOUT)
            wait_for(lambda: finished(db) == len(db.messages()) == len(corpus.deliveries),
                     "every record finished", SETTLE_TIMEOUT)
            assert asked is not None
            queue = open_queue(store_config)
            try:
                wait_for(lambda: any(j.state == JobState.SENT and j.reported
                                     for j in queue.jobs()), "the PEC reply sent", 120)
                jobs = queue.jobs()
            finally:
                queue.close()

            # The restarted instances got their share back without anyone stopping.
            def held() -> list[list[str]]:
                return [sorted(i.healthz()[1]["leases"]["leases"]) for i in instances]

            def balanced() -> bool:
                try:
                    now = held()
                except OSError:  # an instance restarted last is not listening yet
                    return False
                return ([sum(1 for r in h if r.startswith("account:")) for h in now]
                        == [ACCOUNTS // INSTANCES] * INSTANCES
                        and sum(1 for h in now if "sweep" in h) == 1)

            wait_for(balanced, "accounts spread evenly, one sweep", 60)
            print("leases held at the end: " + "; ".join(
                f"instance {i}: {', '.join(h)}" for i, h in enumerate(held())), flush=True)
            for instance in instances:
                status, report = instance.healthz()
                assert status == 200 and report["leases"]["healthy"], report
        finally:
            codes = [i.stop() if i.alive else None for i in instances]
            db.close()
        assert codes == [0] * INSTANCES, codes

        # -- what the kills left: nothing lost, nothing twice --------------------------------
        ticket_of_root = check_host(corpus, CorpusTickets(zd, asked))  # type: ignore[arg-type]
        store = open_store(store_config)
        try:
            check_ledger(corpus, store.messages(), ticket_of_root)
            leases = store.leases()
        finally:
            store.close()
        assert not any(lease.live for lease in leases), "a clean stop hands every lease back"
        for n, user in enumerate(users):
            assert dovecot.list_folder(user, "Error") == []
            processed = Counter(m.raw for m in dovecot.list_folder(user, "Processed"))
            assert processed == Counter(m.raw for m in boxes[n]), account_name(n)

        assert [m.rcpt_tos for m in smtp.received] == [("mario.rossi@pec.example.it",)]
        assert f"#{asked}]" in smtp.received[0].message()["Subject"]
        assert [j.state for j in jobs] == [JobState.SENT], [(j.state, j.error) for j in jobs]
        logs = "\n".join(i.logs() for i in instances)
        takeovers = logs.count(" over from ")
        woke = paused.logs()
        # Its renewal finds the leases taken, or (its session ended meanwhile) fails after
        # they ran out; either way it stops working them.
        assert " to another instance; stopping work there" in woke \
            or "leases ran out without a renewal; stopping work on" in woke, \
            "the paused instance did not notice it lost its accounts"
        print(f"{len(kills)} kills, {takeovers} account/sweep takeovers, "
              f"{len(ticket_of_root)} tickets, all {len(corpus.deliveries)} deliveries "
              "accounted for, the PEC reply sent once", flush=True)
        assert takeovers >= 1, "no takeover happened: the kills proved nothing"


# -- a network cut between one instance and the database ------------------------------------


class Gate:
    """A loopback TCP relay in front of the database that can be shut and opened again on
    the same port: shut, it resets every relayed connection and refuses new ones (the
    database unreachable from one instance), as a cut network or a firewall would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            # Shut down first: a close() alone does not wake the relay thread blocked in
            # recv() on the socket, which keeps it open (a connection whose instance waits
            # for a reply would never be cut). Then RST: both ends learn at once.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # shut while this one was connecting
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def simple_mail(token: str) -> bytes:
    return (f"From: Cliente {token} <cliente-{token}@example.org>\r\n"
            f"To: {SUPPORT_ADDRESS}\r\nSubject: Richiesta {token}\r\n"
            f"Message-ID: <{token}@cut.example.org>\r\n"
            "Date: Mon, 02 Mar 2026 10:00:00 +0100\r\n\r\n"
            f"Buongiorno, richiesta {token}.\r\n").encode()


def test_an_instance_cut_off_from_the_database_loses_its_accounts_and_comes_back(
        dovecot: DovecotServer, tmp_path: Path, pki: Pki, pg_dsn: str,
        postgres: Any) -> None:
    """Instance A reaches PostgreSQL through a gate, B directly. The gate shuts: A cannot
    renew, its /healthz turns 503, B takes A's accounts once the leases ran out by the
    database's clock and drains mail that arrives meanwhile; the gate opens: A learns it lost
    its accounts, takes its share back, and every mail is one ticket."""
    accounts = 4
    users = [dovecot.add_user() for _ in range(accounts)]
    gate = Gate(postgres.port)
    cut_dsn = pg_dsn.replace(f":{postgres.port}/", f":{gate.port}/")
    with ZendeskDouble(tmp_path / "zendesk.json") as zd, \
            SmtpTestServer(pki, mode="starttls", username=PEC_FROM, password="pec-pw") as smtp:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        [config_a] = write_configs(tmp_path / "a", dovecot, users, zd, smtp, cut_dsn, count=1)
        [config_b] = write_configs(tmp_path / "b", dovecot, users, zd, smtp, pg_dsn, count=1)
        a, b = Instance(0, config_a, tmp_path / "a"), Instance(1, config_b, tmp_path / "b")
        db = open_store(load_config(config_b).store)
        sent: list[str] = []

        def deliver(tag: str) -> None:
            for n, user in enumerate(users):
                for i in range(3):
                    sent.append(f"{tag}-{n}-{i}")
                    dovecot.append(user, simple_mail(sent[-1]))

        def drained() -> bool:
            return not any(inbox_counts(dovecot, users)) and finished(db) == len(sent)

        def shares() -> list[int]:
            return [len([r for r in held_by(db, i) if r.startswith("account:")])
                    for i in (a, b)]

        try:
            a.start()
            b.start()
            wait_for(lambda: shares() == [2, 2], "two accounts each", 120)
            deliver("before")
            wait_for(drained, "mail before the cut ticketed", 120)

            gate.shut()
            wait_for(lambda: shares() == [0, 4], "B holds every account", 120)

            def cut_off() -> bool:
                status, report = a.healthz()
                leases = report["leases"]
                return status == 503 and leases["renew_failures"] >= 1 \
                    and not leases["healthy"]

            # Its renewals fail (none waits on the cut forever): 503, and failures counted.
            wait_for(cut_off, "A unhealthy while cut off, its failed renewals counted", 120)
            deliver("cut")
            wait_for(drained, "mail during the cut ticketed by B", 120)

            gate.open()
            wait_for(lambda: shares() == [2, 2], "A has its share back", 120)
            assert a.healthz()[0] == 200
            deliver("after")
            wait_for(drained, "mail after the cut ticketed", 120)
        finally:
            codes = [i.stop() for i in (a, b) if i.alive]
            db.close()
            gate.shut()
        assert codes == [0, 0], codes
        subjects = Counter(t["subject"] for t in zd.tickets())
        assert subjects == Counter(f"Richiesta {token}" for token in sent)
        assert "lost account:" in a.logs() or "leases ran out without a renewal" in a.logs()
