"""Mailbox connections that survive the server (issue 13): a restarted Dovecot, a kicked
session, a silently dead connection, paced logins and what `accounts` and /metrics say about
it. Everything is asserted on counts and events (reconnections, fetches, wake-ups of the IDLE
wait), never on how long something took."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bridge_cli import run_cli, wait_until
from dovecot import CuttingProxy, DovecotServer, MailUser
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail

from connector.config import AccountConfig
from connector.errors import FetchError
from connector.fetch import open_mailbox
from connector.fetch.base import Mailbox
from connector.fetch.imap import ImapMailbox, QuietIMAPClient
from connector.fetch.pacing import LoginPacing, ServerLimits, ServerPacer
from connector.fetch.status import ConnectionState, StatusBoard
from connector.fetch.wakeup import StopEvent
from connector.service import runner
from connector.service.connections import persisting_board
from connector.service.metrics import Metrics
from connector.service.runner import Service

HOUR_MINUTES = 60.0


@pytest.fixture(scope="module")
def restartable() -> Iterator[DovecotServer]:
    """A Dovecot of this module's own: the tests stop and restart it."""
    with DovecotServer() as server:
        yield server


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real schedule (5 s, 10 s, ... and up to 2 s of jitter) with a tenth of a second
    instead: the tests count attempts, they do not wait."""
    monkeypatch.setattr(runner, "BACKOFF_BASE_SECONDS", 0.1)
    monkeypatch.setattr(runner, "RECONNECT_JITTER_SECONDS", 0.1)


class Spy:
    """A mailbox factory that keeps every mailbox it made, to count the IDLE wait's wake-ups
    and connections per account."""

    def __init__(self) -> None:
        self.made: dict[str, list[Mailbox]] = {}
        self._lock = threading.Lock()

    def factory(self, acc: AccountConfig) -> Mailbox:
        mailbox = open_mailbox(acc)
        with self._lock:
            self.made.setdefault(acc.name, []).append(mailbox)
        return mailbox

    def wakeups(self, name: str) -> int:
        return sum(getattr(m, "wakeups", 0) for m in self.made.get(name, []))

    def connections(self, name: str) -> int:
        return len(self.made.get(name, []))


@contextlib.contextmanager
def running(service: Service) -> Iterator[None]:
    thread = threading.Thread(target=service.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        service.stop.set()
        thread.join(15)
    assert not thread.is_alive(), "the service did not stop"


def events(bridge: Bridge, name: str, event: str) -> list[Any]:
    return [e for e in bridge.store.log_entries(account=name) if e.event == event]


def idling(board: StatusBoard, names: list[str]) -> bool:
    return all((s := board.status(n)) is not None and s.state == ConnectionState.IDLING
               for n in names)


def kick_and_reconnect(dovecot: DovecotServer, user: MailUser, bridge: Bridge,
                       board: StatusBoard, name: str) -> None:
    """Once ``name`` idles, ``doveadm kick`` its session; until it has reconnected and idles
    again."""
    wait_until(lambda: idling(board, [name]), "IDLE")
    dovecot.kick(user)
    wait_until(lambda: len(events(bridge, name, "reconnected")) == 1 and idling(board, [name]),
               "the reconnection")


# -- a restarted server ---------------------------------------------------------------------------


def test_every_account_comes_back_after_a_restart_and_the_outage_mail_becomes_tickets(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    users = [restartable.add_user() for _ in range(4)]
    pop_user = restartable.add_user()
    for user in [*users, pop_user]:
        restartable.append(user, customer_mail(f"Prima di {user.name}", f"{user.name}@before"))
    imap_names = [f"imap{n}" for n in range(len(users))]
    bridge = make_bridge([
        *(account(restartable, user, name, poll_interval=HOUR_MINUTES)
          for name, user in zip(imap_names, users, strict=True)),
        account(restartable, pop_user, "pop", "pop3", poll_interval=0.005),  # 0.3 s
    ])
    spy = Spy()
    board = StatusBoard()
    service = Service([bridge.poller(a.name, mailbox_factory=spy.factory)
                       for a in bridge.config.accounts], board=board)
    with running(service):
        wait_until(lambda: len(zendesk.ticket_list()) == 5 and idling(board, imap_names),
                   "five tickets and four accounts in IDLE")
        wakeups_before = {n: spy.wakeups(n) for n in imap_names}

        restartable.stop()
        # Every idling account notices at once (EOF/BYE), not after its hour-long interval.
        wait_until(lambda: all(events(bridge, n, "connection lost") for n in imap_names),
                   "every IMAP account to notice the server is gone")
        for user in [*users, pop_user]:
            restartable.deliver_offline(
                user, customer_mail(f"Durante il riavvio {user.name}", f"{user.name}@outage"))
        restartable.start()

        wait_until(lambda: len(zendesk.ticket_list()) == 10, "the outage mail to be ticketed",
                   timeout=30)
        wait_until(lambda: idling(board, imap_names), "every account back in IDLE")

    subjects = sorted(t["subject"] for t in zendesk.ticket_list())
    assert subjects == sorted([f"Prima di {u.name}" for u in [*users, pop_user]]
                              + [f"Durante il riavvio {u.name}" for u in [*users, pop_user]])
    for name in imap_names:
        assert len(events(bridge, name, "connection lost")) == 1
        [reconnected] = events(bridge, name, "reconnected")
        assert reconnected.detail.startswith("after: ")
        status = board.status(name)
        assert status is not None and status.reconnects_last_hour == 1
        # Blocked, not spinning: the lost connection woke its wait a couple of times (the BYE
        # line, the EOF), never thousands.
        assert spy.wakeups(name) - wakeups_before[name] <= 5
        assert spy.connections(name) >= 2
    # Nothing went to the error folder and nothing was left behind.
    for user in [*users, pop_user]:
        assert restartable.list_folder(user, "Error") == []


# -- a kicked session -----------------------------------------------------------------------------


def test_a_connection_kicked_by_the_server_is_seen_at_once(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    user = restartable.add_user()
    # Only the kick can end this wait early: no renewal for an hour, no poll for an hour.
    bridge = make_bridge([account(restartable, user, "kicked", poll_interval=HOUR_MINUTES,
                                  idle_renew_seconds=3600)])
    spy = Spy()
    board = StatusBoard()
    service = Service([bridge.poller("kicked", mailbox_factory=spy.factory)], board=board)
    with running(service):
        kick_and_reconnect(restartable, user, bridge, board, "kicked")
        restartable.append(user, customer_mail("Dopo il kick", "kick@example.org"))
        wait_until(lambda: len(zendesk.ticket_list()) == 1, "the ticket")

    [lost] = events(bridge, "kicked", "connection lost")
    assert "connection lost" in (lost.detail or "")
    assert spy.connections("kicked") == 2
    first = spy.made["kicked"][0]
    assert isinstance(first, ImapMailbox)
    assert first.wakeups <= 3  # the kick's BYE (and its EOF): no spinning on a closed socket
    status = board.status("kicked")
    assert status is not None and status.reconnects_last_hour == 1


def test_a_dropped_connection_without_bye_is_seen_at_once(restartable: DovecotServer) -> None:
    user = restartable.add_user()
    in_idle = threading.Event()

    class Client(QuietIMAPClient):
        def idle(self) -> Any:
            answer = super().idle()
            in_idle.set()
            return answer

    with CuttingProxy(restartable.imap_port) as proxy:
        acc = restartable.account(user, port=proxy.port, idle_renew_seconds=3600)
        mailbox = ImapMailbox(acc, client_class=Client)
        with mailbox:
            result: dict[str, Any] = {}

            def wait() -> None:
                try:
                    result["pushed"] = mailbox.wait_for_mail(3600, StopEvent())
                except Exception as exc:  # noqa: BLE001 - the test inspects it
                    result["error"] = exc

            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            assert in_idle.wait(10), "the wait never entered IDLE"
            proxy.drop_all()  # both sides closed: an RST/EOF, no BYE
            waiter.join(15)
            assert not waiter.is_alive()
    assert "connection lost" in str(result.get("error"))
    assert mailbox.wakeups == 1
    assert not mailbox.connected


def test_a_silently_dead_connection_is_found_by_the_idle_renewal(
    restartable: DovecotServer,
) -> None:
    user = restartable.add_user()
    with CuttingProxy(restartable.imap_port) as proxy:

        class Client(QuietIMAPClient):
            def idle(self) -> Any:
                answer = super().idle()
                proxy.freeze()  # in IDLE, the path goes silent: no FIN, no RST, no data
                return answer

        # The renewal's DONE gets no answer within `timeout`: the connection is dead.
        acc = restartable.account(user, port=proxy.port, idle_renew_seconds=0.3, timeout=1)
        mailbox = ImapMailbox(acc, client_class=Client)
        mailbox.connect()
        with pytest.raises(FetchError, match="timed out"):
            mailbox.wait_for_mail(3600, StopEvent())
        assert not mailbox.connected
        assert mailbox.wakeups == 1  # the renewal deadline; then DONE, unanswered


def test_stop_wakes_an_idle_wait_blocked_on_its_socket(restartable: DovecotServer) -> None:
    user = restartable.add_user()
    mailbox = ImapMailbox(restartable.account(user, idle_renew_seconds=3600))
    stop = StopEvent()
    with mailbox:
        result: dict[str, bool] = {}
        waiter = threading.Thread(target=lambda: result.setdefault(
            "pushed", mailbox.wait_for_mail(3600, stop)), daemon=True)
        waiter.start()
        wait_until(waiter.is_alive, "the wait")
        stop.set()
        waiter.join(15)
        assert result == {"pushed": False}
        assert mailbox.wakeups <= 1
        assert mailbox.state().refs == frozenset()  # IDLE ended with DONE: still usable


# -- paced logins ---------------------------------------------------------------------------------


def test_the_pacer_spreads_logins_at_its_rate_after_the_burst() -> None:
    now = [100.0]
    waited: list[float] = []

    def wait(stop: threading.Event, seconds: float) -> bool:
        waited.append(seconds)
        return False

    pacer = ServerPacer("mail:993", ServerLimits(login_rate=5, login_burst=2,
                                                 max_connections=0),
                        clock=lambda: now[0], wait=wait)
    slots = [pacer.acquire(threading.Event()) for _ in range(6)]
    assert all(slot is not None for slot in slots)
    assert [round(t - 100.0, 6) for t in pacer.grant_times] == [0, 0, 0.2, 0.4, 0.6, 0.8]
    assert [round(w, 6) for w in waited] == [0.2, 0.4, 0.6, 0.8]
    assert (pacer.granted, pacer.delayed) == (6, 4)


def test_the_connection_cap_holds_the_next_login_until_one_is_released() -> None:
    pacer = ServerPacer("mail:993", ServerLimits(login_rate=0, max_connections=2))
    stop = threading.Event()
    first, second = pacer.acquire(stop), pacer.acquire(stop)
    assert first is not None and second is not None
    got: list[Any] = []
    third = threading.Thread(target=lambda: got.append(pacer.acquire(stop)), daemon=True)
    third.start()
    wait_until(pacer.crowded, "the third login to wait")
    assert got == [] and pacer.would_wait()
    first.release()
    third.join(5)
    assert len(got) == 1 and got[0] is not None and pacer.open_connections == 2
    # A shutdown wakes a waiter, which then gets nothing.
    fourth = threading.Thread(target=lambda: got.append(pacer.acquire(stop)), daemon=True)
    fourth.start()
    wait_until(pacer.crowded, "the fourth login to wait")
    stop.set()
    pacer.interrupt()
    fourth.join(5)
    assert got[-1] is None


def test_presets_and_config_give_each_server_its_limits() -> None:
    pacing = LoginPacing(ServerLimits(login_rate=20), {
        "mail.example.com:993": ServerLimits(login_rate=1, source="cfg")})
    assert pacing.limits_for("mail.example.com", 993).login_rate == 1
    assert pacing.limits_for("mail.example.com", 143).login_rate == 20
    assert pacing.limits_for("imap.gmail.com", 993).source == "preset imap.gmail.com"
    assert pacing.for_server("MAIL.example.com", 993) is pacing.for_server("mail.example.com",
                                                                           993)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_start_up_storm_is_spread_by_the_login_pacer(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
    protocol: str,
) -> None:
    users = [restartable.add_user() for _ in range(6)]
    names = [f"storm{n}" for n in range(len(users))]
    bridge = make_bridge([account(restartable, user, name, protocol,
                                  poll_interval=HOUR_MINUTES)
                          for name, user in zip(names, users, strict=True)])
    pacing = LoginPacing(ServerLimits(login_rate=8, login_burst=1))
    board = StatusBoard()
    service = Service([bridge.poller(n) for n in names], pacing=pacing, board=board)
    settled = ConnectionState.IDLING if protocol == "imap" else ConnectionState.WAITING
    with running(service):
        wait_until(lambda: board.count(settled) == len(names), f"every account {settled}")
    [pacer] = pacing.pacers()
    assert pacer.granted == 6
    assert pacer.delayed >= 5  # all six asked at once: five waited their turn
    gaps = [b - a for a, b in zip(pacer.grant_times, list(pacer.grant_times)[1:], strict=False)]
    assert all(gap >= 1 / 8 - 1e-6 for gap in gaps)
    waited = {name for name, state in board.transitions
              if state == ConnectionState.WAITING_FOR_LOGIN}
    assert len(waited) >= 5
    for name in names:
        assert len(events(bridge, name, "login")) == 1


def test_every_mailbox_socket_has_tcp_keepalive(restartable: DovecotServer) -> None:
    user = restartable.add_user()
    restartable.append(user, customer_mail("Keepalive", "keepalive@example.org"))
    for protocol in ("imap", "pop3"):
        mailbox = open_mailbox(restartable.account(user, protocol, tcp_keepalive_seconds=45))
        with mailbox:
            sock = (mailbox._client.socket() if isinstance(mailbox, ImapMailbox)  # type: ignore[attr-defined]
                    else mailbox._conn.sock)  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 45
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    off = ImapMailbox(restartable.account(user, tcp_keepalive_seconds=0))
    with off:
        assert off._client.socket().getsockopt(  # type: ignore[union-attr]
            socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_accounts_shows_accounts_waiting_for_a_login_slot(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
    tmp_path: Any,
) -> None:
    users = [restartable.add_user() for _ in range(2)]
    bridge = make_bridge([account(restartable, u, name, poll_interval=HOUR_MINUTES)
                          for u, name in zip(users, ("first", "second"), strict=True)])
    pacing = LoginPacing(ServerLimits(max_connections=1))
    # Someone else holds the server's only connection when the service starts.
    held = pacing.for_server(restartable.host, restartable.imap_port).acquire(threading.Event())
    assert held is not None
    board = persisting_board(bridge.store)
    metrics = Metrics()
    metrics.watch_connections(board)
    service = Service([bridge.poller("first"), bridge.poller("second")], pacing=pacing,
                      board=board)
    config = tmp_path / "config.yaml"
    with running(service):
        wait_until(lambda: board.count(ConnectionState.WAITING_FOR_LOGIN) == 2,
                   "both accounts waiting for the connection")
        exposition = metrics.exposition().decode()
        code, lines = run_cli("-c", str(config), "accounts")
        for user, name in zip(users, ("first", "second"), strict=True):
            restartable.append(user, customer_mail(f"Per {name}", f"{name}@cap"))
        held.release()
        # The cap rotates: the first in gives the connection up after its pass, because the
        # other waits for it.
        wait_until(lambda: len(zendesk.ticket_list()) == 2, "both accounts' mail")
    assert code == 0
    connection_lines = [line.strip() for line in lines if "connection:" in line]
    assert len(connection_lines) == 2
    assert all(line.startswith("connection: waiting for a login slot (127.0.0.1:")
               for line in connection_lines)
    assert all("reconnects in the last hour: 0" in line for line in connection_lines)
    assert ('pmb_account_connection_state{account="first",state="waiting for a login slot"} '
            '1.0') in exposition
    assert 'pmb_accounts_by_connection_state{state="waiting for a login slot"} 2.0' in exposition
    [pacer] = pacing.pacers()
    assert pacer.open_connections <= 1


# -- what accounts and /metrics say ---------------------------------------------------------------


def test_accounts_and_metrics_show_state_last_server_event_and_reconnects(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
    tmp_path: Any,
) -> None:
    user = restartable.add_user()
    bridge = make_bridge([account(restartable, user, "watched", poll_interval=HOUR_MINUTES)])
    board = persisting_board(bridge.store)
    metrics = Metrics()
    metrics.watch_connections(board)
    service = Service([bridge.poller("watched")], board=board)
    config = tmp_path / "config.yaml"
    with running(service):
        kick_and_reconnect(restartable, user, bridge, board, "watched")
        restartable.append(user, customer_mail("Notizia", "event@example.org"))
        wait_until(lambda: len(zendesk.ticket_list()) == 1 and idling(board, ["watched"]),
                   "the ticket")
        code, lines = run_cli("-c", str(config), "accounts", "--json")
        exposition = metrics.exposition().decode()
    assert code == 0
    import json

    [row] = json.loads("\n".join(lines))
    assert row["connection"] == "idling"
    assert row["reconnects_last_hour"] == 1
    assert row["last_server_event"] in ("new mail announced (EXISTS 1)", "logged in",
                                        "IDLE renewed") or row["last_server_event"].startswith(
                                            "new mail")
    assert row["last_server_event_at"] is not None
    assert 'pmb_account_connection_state{account="watched",state="idling"} 1.0' in exposition
    assert 'pmb_account_reconnects_last_hour{account="watched"} 1.0' in exposition
    assert "pmb_account_last_server_event_timestamp_seconds{account=\"watched\"" in exposition

    # Once the service is gone, `accounts` says so instead of showing a stale state.
    code, lines = run_cli("-c", str(config), "accounts")
    assert code == 0
    [connection] = [line for line in lines if "connection:" in line]
    assert "connection: stopped since" in connection or "not running" in connection
    assert "reconnects in the last hour: 1" in connection


def test_an_idle_that_breaks_right_after_each_reconnection_backs_off(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[int] = []

    def recorded(failures: int, rng: Any = None) -> float:
        asked.append(failures)
        return 0.01

    monkeypatch.setattr(runner, "backoff_delay", recorded)

    class BrokenIdle(QuietIMAPClient):
        def idle(self) -> Any:
            raise imaplib.IMAP4.abort("socket error: EOF")

    user = restartable.add_user()
    bridge = make_bridge([account(restartable, user, "broken", poll_interval=HOUR_MINUTES)])
    service = Service([bridge.poller(
        "broken", mailbox_factory=lambda acc: ImapMailbox(acc, client_class=BrokenIdle))])
    with running(service):
        wait_until(lambda: len(asked) >= 3, "three reconnections")
    # The first loss reconnects after a short jitter; each further one waits longer.
    assert asked[:3] == [1, 2, 3]
    assert len(events(bridge, "broken", "reconnected")) >= 3


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_idle_over_tls_reports_mail_and_a_kick(restartable: DovecotServer,
                                               security: str) -> None:
    """TLS keeps bytes of its own (decrypted records) where poll() cannot see them."""
    user = restartable.add_user()
    in_idle = threading.Event()

    class Client(QuietIMAPClient):
        def idle(self) -> Any:
            answer = super().idle()
            in_idle.set()
            return answer

    mailbox = ImapMailbox(restartable.account(user, security=security,
                                              idle_renew_seconds=3600), client_class=Client)
    result: dict[str, Any] = {}

    def wait() -> None:
        try:
            result["pushed"] = mailbox.wait_for_mail(3600, StopEvent())
        except FetchError as exc:
            result["error"] = exc

    with mailbox:
        for step in ("mail", "kick"):
            mailbox.list_new(set())  # as a pass does before each wait
            in_idle.clear()
            result.clear()
            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            assert in_idle.wait(10), "the wait never entered IDLE"
            wakeups = mailbox.wakeups
            if step == "mail":
                restartable.append(user, customer_mail("Cifrata", f"tls-{security}@x.org"))
            else:
                restartable.kick(user)
            waiter.join(15)
            assert not waiter.is_alive()
            assert mailbox.wakeups - wakeups <= 2
            if step == "mail":
                assert result == {"pushed": True}
    assert "connection lost" in str(result.get("error"))


def test_run_once_under_a_connection_cap_of_one_serves_every_account(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    users = [restartable.add_user() for _ in range(3)]
    for n, user in enumerate(users):
        restartable.append(user, customer_mail(f"Una volta {n}", f"once{n}@example.org"))
    bridge = make_bridge([account(restartable, u, f"once{n}") for n, u in enumerate(users)])
    pacing = LoginPacing(ServerLimits(max_connections=1))
    service = Service([bridge.poller(f"once{n}") for n in range(3)], pacing=pacing)
    summaries = service.run_once()
    assert [s.counts["ticketed"] for s in summaries] == [1, 1, 1]
    [pacer] = pacing.pacers()
    assert (pacer.granted, pacer.open_connections) == (3, 0)


def test_accounts_says_not_running_when_the_service_that_saved_the_state_is_gone(
    tmp_path: Any,
) -> None:
    import subprocess
    from datetime import UTC, datetime

    from connector.service.connections import connection_report
    from connector.store.sqlite import SQLiteStore

    finished = subprocess.Popen(["true"])  # its pid belongs to nobody once reaped
    finished.wait()
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    try:
        now = datetime.now(UTC)
        store.save_connection_status("old", state="idling", detail=None, since=now,
                                     server_event="IDLE renewed", server_event_at=now,
                                     pid=finished.pid)
        report = connection_report(store, ["old", "never"])
    finally:
        store.close()
    assert report["old"]["connection"] == "not running"
    assert report["old"]["last_server_event"] == "IDLE renewed"
    assert report["never"] == {"connection": "not running", "connection_since": None,
                               "connection_detail": None, "last_server_event": None,
                               "last_server_event_at": None, "reconnects_last_hour": 0}


def test_a_server_that_stays_away_after_a_loss_gets_the_account_disabled_visibly(
    restartable: DovecotServer, zendesk: FakeZendesk, make_bridge: Callable[..., Bridge],
) -> None:
    user = restartable.add_user()
    bridge = make_bridge([account(restartable, user, "gone", max_failures=3,
                                  poll_interval=HOUR_MINUTES)])
    board = StatusBoard()
    service = Service([bridge.poller("gone")], board=board)
    try:
        with running(service):
            wait_until(lambda: idling(board, ["gone"]), "IDLE")
            restartable.stop()  # and it stays away
            wait_until(lambda: not bridge.store.get_health("gone").enabled, "auto-disable")
            wait_until(lambda: (s := board.status("gone")) is not None
                       and s.state == ConnectionState.DISABLED, "the disabled state")
            failed = len(events(bridge, "gone", "connection failed"))
    finally:
        restartable.start()
    assert len(events(bridge, "gone", "connection lost")) == 1
    assert failed == 3  # three attempts, backing off, then no more
    assert events(bridge, "gone", "reconnected") == []
    [disabled] = events(bridge, "gone", "account disabled")
    assert "3 consecutive connection failures" in (disabled.detail or "")
    backoffs = [state for name, state in board.transitions
                if name == "gone" and state == ConnectionState.BACKING_OFF]
    assert len(backoffs) >= 3
