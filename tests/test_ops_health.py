"""Account health (issue 6): backoff, auto-disable after ``max_failures`` connection failures
against a closed port and re-enabling from the CLI, one worker per account so a broken mailbox
never delays the others, and the ``accounts`` report. Real Dovecot; Zendesk faked by
`responses` (tests/zendesk_responses.py)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_cli import run_cli, wait_until
from dovecot import HOST, DovecotServer, MailUser, free_port
from zendesk_responses import (
    Bridge,
    FakeZendesk,
    account,
    customer_mail,
)

from connector.cli import EX_OK
from connector.service import runner
from connector.service.runner import AccountPoller, Service, backoff_delay

TICKETS = r"^/api/v2/tickets$"


def cli(config: Path, *argv: str) -> tuple[int, list[str]]:
    return run_cli("-c", str(config), *argv)


@contextlib.contextmanager
def running(service: Service) -> Iterator[threading.Thread]:
    """``service.run_forever()`` in a thread for the block; stopped and joined after it."""
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        service.stop.set()
        thread.join(15)
    assert not thread.is_alive(), "the service did not stop"


class Forwarder:
    """Listens on a given port (a port that was closed until now) and relays every connection
    to ``target_port``: the mailbox "comes back" on the address the account points at."""

    def __init__(self, port: int, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, port))
        self._listener.listen()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target_port), timeout=10)
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

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port whose TCP handshake succeeds but that never says a word (a hung server)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def events(bridge: Bridge, name: str, event: str) -> list[Any]:
    return [e for e in bridge.store.log_entries(account=name) if e.event == event]


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_delay_doubles_with_each_failure_and_is_capped() -> None:
    rng = random.Random(7)
    assert backoff_delay(0, rng) == 0.0
    for failures in range(1, 8):
        base = min(runner.BACKOFF_MAX_SECONDS, runner.BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
        for _ in range(20):
            assert 0.8 * base <= backoff_delay(failures, rng) <= 1.2 * base
    # Jitter bands of successive failures do not overlap until the cap: it always grows.
    assert 1.2 * runner.BACKOFF_BASE_SECONDS < 0.8 * 2 * runner.BACKOFF_BASE_SECONDS
    assert backoff_delay(50, rng) <= 1.2 * runner.BACKOFF_MAX_SECONDS
    assert backoff_delay(50, rng) >= 0.8 * runner.BACKOFF_MAX_SECONDS
    assert len({round(backoff_delay(3), 6) for _ in range(10)}) > 1  # jittered


def test_worker_backs_off_longer_after_each_failure(
    dovecot: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []
    real = runner.backoff_delay

    def recorded(failures: int, rng: random.Random | None = None) -> float:
        asked.append(failures)
        return 0.01  # the test does not wait the real 30 s, 60 s ...

    monkeypatch.setattr(runner, "backoff_delay", recorded)
    bridge = make_bridge([account(dovecot, dovecot.add_user(), "down", port=free_port(),
                                  auto_disable=False)])
    with running(Service([bridge.poller("down")])):
        wait_until(lambda: len(asked) >= 5, "five backoffs")

    assert asked[:5] == [1, 2, 3, 4, 5]
    rng = random.Random(1)
    delays = [real(n, rng) for n in asked[:5]]
    assert delays == sorted(delays) and delays[0] < delays[-1]
    health = bridge.store.get_health("down")
    assert health.enabled  # auto_disable: false
    assert health.consecutive_failures >= 5


# -- auto-disable -------------------------------------------------------------------------------


def test_account_is_disabled_after_max_failures_and_resumes_when_enabled(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(runner, "BACKOFF_BASE_SECONDS", 0.01)
    port = free_port()  # nobody listens here yet
    bridge = make_bridge([account(dovecot, mailbox_user, "flaky", port=port, max_failures=3,
                                  poll_interval=0.005)])  # minutes: 0.3 s
    config = tmp_path / "config.yaml"
    with running(Service([bridge.poller("flaky")])):
        wait_until(lambda: not bridge.store.get_health("flaky").enabled, "auto-disable")

        health = bridge.store.get_health("flaky")
        assert health.consecutive_failures == 3
        assert health.disabled_reason is not None
        assert health.disabled_reason.startswith(
            "disabled after 3 consecutive connection failures; last: ")
        assert "cannot connect" in health.disabled_reason
        failed = events(bridge, "flaky", "connection failed")
        assert [(e.level, e.kind) for e in failed] == [("error", "connection")] * 3
        assert all("cannot connect" in (e.detail or "") for e in failed)
        [disabled] = events(bridge, "flaky", "account disabled")
        assert disabled.level == "error"

        code, lines = cli(config, "accounts")
        assert code == EX_OK
        assert lines[0].startswith("flaky: disabled; last success never; failures in a row 3;")
        assert "cannot connect" in lines[1]
        assert lines[2].endswith("re-enable with 'postmaster-bridge accounts enable flaky'")

        time.sleep(1.0)  # three poll intervals: a disabled account is not tried
        assert len(events(bridge, "flaky", "connection failed")) == 3

        # The cause is fixed: the mailbox answers on that port again.
        forwarder = Forwarder(port, dovecot.imap_port)
        raw = customer_mail("Dopo la riattivazione", "back@example.org")
        dovecot.append(mailbox_user, raw)
        assert cli(config, "accounts", "enable", "flaky") == (EX_OK, ["flaky: enabled"])
        wait_until(lambda: len(zendesk.ticket_list()) == 1, "the worker to pick it up")
    forwarder.close()

    health = bridge.store.get_health("flaky")
    assert (health.enabled, health.consecutive_failures, health.disabled_reason) == (
        True, 0, None)
    assert health.last_success_at is not None
    [enabled] = events(bridge, "flaky", "account enabled")
    assert (enabled.level, enabled.detail) == ("notice", "by the admin")
    assert len(events(bridge, "flaky", "login")) >= 1
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Processed")] == [raw]


def test_admin_disable_stops_the_worker_until_enabled(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], tmp_path: Path,
) -> None:
    bridge = make_bridge([account(dovecot, mailbox_user, "support", idle=False,
                                  poll_interval=0.003)])  # minutes: 0.18 s
    config = tmp_path / "config.yaml"
    assert cli(config, "accounts", "disable", "support") == (EX_OK, ["support: disabled"])
    with running(Service([bridge.poller("support")])):
        dovecot.append(mailbox_user, customer_mail("In attesa", "held@example.org"))
        time.sleep(0.8)  # several poll intervals
        assert zendesk.ticket_list() == []
        assert events(bridge, "support", "login") == []

        assert cli(config, "accounts", "enable", "support") == (EX_OK, ["support: enabled"])
        wait_until(lambda: len(zendesk.ticket_list()) == 1, "the worker to resume")


def test_auto_disable_false_keeps_trying(
    dovecot: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge([account(dovecot, dovecot.add_user(), "down", port=free_port(),
                                  max_failures=2, auto_disable=False)])
    poller: AccountPoller = bridge.poller("down")
    for _ in range(4):
        assert "cannot connect" in (poller.poll().error or "")
    health = bridge.store.get_health("down")
    assert (health.enabled, health.consecutive_failures) == (True, 4)
    assert events(bridge, "down", "account disabled") == []


# -- one worker per account ---------------------------------------------------------------------


def test_a_broken_mailbox_never_delays_the_others(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge],
) -> None:
    with silent_port() as hung_port:
        bridge = make_bridge([
            # Refused at once, then the real 30 s backoff, then again ...
            account(dovecot, dovecot.add_user(), "refused", port=free_port()),
            # Connects, then waits for a greeting that never comes.
            account(dovecot, dovecot.add_user(), "hung", port=hung_port, timeout=2),
            account(dovecot, mailbox_user, "support", poll_interval=0.005),
        ])
        service = Service([bridge.poller(a.name) for a in bridge.config.accounts])
        with running(service):
            for n in range(3):
                dovecot.append(mailbox_user, customer_mail(f"Avanti {n}", f"on{n}@example.org"))
                wait_until(lambda n=n: len(zendesk.ticket_list()) == n + 1,
                           f"ticket {n + 1} while the other mailboxes are broken", timeout=10)
            assert bridge.store.get_health("refused").consecutive_failures >= 1

    assert [t["subject"] for t in zendesk.ticket_list()] == [f"Avanti {n}" for n in range(3)]
    assert "cannot connect" in (bridge.store.get_health("refused").last_error or "")
    assert bridge.store.get_health("support").consecutive_failures == 0


# Fixed; the test guards it: Service._loop calls poller.poll() unguarded and AccountPoller.poll
# catches only FetchError, so anything else raised in a pass (here a store error such as "disk I/O
# error" or "database is locked" after the 30 s busy timeout) ends the account's thread for good:
# the account is never polled again, nothing is recorded in its health, /healthz still says 200,
# and when every worker has died run_forever returns and ``run`` exits 0. Fix: in ``_loop`` wrap
# the pass in ``except Exception``: log it with the account, close the connection, count it like a
# connection failure (record_connection_failure, so backoff and auto_disable apply) and continue
# the loop.
def test_an_unexpected_error_in_a_pass_does_not_end_the_worker(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "BACKOFF_BASE_SECONDS", 0.01)
    bridge = make_bridge([account(dovecot, mailbox_user, "support", idle=False,
                                  poll_interval=0.003)])
    real = bridge.store.record_success
    passes: list[str] = []

    def first_pass_hits_a_store_error(name: str, backlog: int | None = None) -> None:
        passes.append(name)
        if len(passes) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real(name, backlog=backlog)

    monkeypatch.setattr(bridge.store, "record_success", first_pass_hits_a_store_error)
    with running(Service([bridge.poller("support")])):
        wait_until(lambda: bool(passes), "the first pass")
        dovecot.append(mailbox_user, customer_mail("Dopo l'errore", "after-error@example.org"))
        wait_until(lambda: len(zendesk.ticket_list()) == 1, "the worker to go on", timeout=5)


# -- the accounts report ------------------------------------------------------------------------


def test_accounts_report_shows_state_successes_errors_failures_and_backlog(
    dovecot: DovecotServer, mailbox_user: MailUser, zendesk: FakeZendesk,
    make_bridge: Callable[..., Bridge], tmp_path: Path,
) -> None:
    bridge = make_bridge([
        account(dovecot, mailbox_user, "support"),
        account(dovecot, dovecot.add_user(), "broken", port=free_port()),
        account(dovecot, dovecot.add_user(), "archive", enabled=False),
    ])
    config = tmp_path / "config.yaml"
    dovecot.append(mailbox_user, [
        customer_mail("Zendesk occupato", "busy@example.org"),
        customer_mail("Va bene", "fine@example.org"),
        b"this is not a mail, only a line of text\r\n",
    ])
    zendesk.fail("POST", TICKETS, 503, count=3)  # every attempt for the first mail
    summary = bridge.poll("support")
    assert (summary.counts["retry"], summary.counts["ticketed"], summary.counts["failed"]) == (
        1, 1, 1)
    for _ in range(2):
        assert bridge.poll("broken").error

    code, lines = cli(config, "accounts", "--json")
    assert code == EX_OK
    rows = {row["account"]: row for row in json.loads("\n".join(lines))}
    assert list(rows) == ["support", "broken", "archive"]
    support, broken, archive = rows["support"], rows["broken"], rows["archive"]
    assert support["state"] == "enabled"
    assert support["last_success"] is not None
    assert (support["last_error"], support["consecutive_failures"]) == (None, 0)
    assert (support["backlog"], support["processed"], support["failed"], support["ignored"]) == (
        1, 1, 1, 0)
    assert isinstance(support["avg_seconds"], float)
    assert broken["state"] == "enabled"
    assert broken["last_success"] is None
    assert "cannot connect" in broken["last_error"]
    assert (broken["consecutive_failures"], broken["backlog"], broken["processed"]) == (2, 0, 0)
    assert archive["state"] == "disabled (config)"

    code, lines = cli(config, "accounts")
    assert code == EX_OK
    assert lines[0].startswith("support: enabled; last success 20")
    assert ("; failures in a row 0; backlog 1; processed 1, failed 1, ignored 0, held 0; avg "
            in lines[0])
    assert lines[1].startswith("broken: enabled; last success never; failures in a row 2; "
                               "backlog 0; processed 0, failed 0, ignored 0")
    assert lines[2].startswith("    last error: ") and "cannot connect" in lines[2]
    assert lines[3].startswith("archive: disabled (config); last success never;")
    assert len(lines) == 4
