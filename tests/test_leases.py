"""Leases: one instance per account, fenced effects, fair shares, the sweep's lease.

Two store objects on one database stand for two instances, on each engine (a SQLite file, a
private PostgreSQL). Expiry is the database's clock: a ttl of a few tenths of a second runs out
while the test waits for it (polled, never asserted as a duration).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import StoreTarget

from connector.errors import LeaseLostError
from connector.service.leases import (
    SWEEP,
    Changes,
    LeaseKeeper,
    account_resource,
    fair_share,
)
from connector.service.runner import join_workers
from connector.store import MessageState, SQLiteStore
from connector.store.base import Fence, Store


def _until_expired(store: Store, resource: str) -> None:
    while any(lease.resource == resource and lease.live for lease in store.leases()):
        time.sleep(0.01)


def test_a_lease_is_one_holders_until_it_expires_then_the_next_epoch(
        target: StoreTarget) -> None:
    a, b = target.store(), target.store()
    first = a.acquire_lease("account:support", "host:1:a", 0.2)
    assert first is not None and first.epoch == 1 and first.live
    assert b.acquire_lease("account:support", "host:2:b", 30) is None
    again = a.acquire_lease("account:support", "host:1:a", 0.2)
    assert again is not None and again.epoch == 1  # renewed, not a new holder
    _until_expired(b, "account:support")
    taken = b.acquire_lease("account:support", "host:2:b", 30)
    assert taken is not None and taken.epoch == 2 and taken.holder == "host:2:b"
    # The old holder cannot renew what it lost, nor take it back while it is live.
    assert a.renew_leases("host:1:a", {"account:support": 1}, 30) == {}
    assert a.acquire_lease("account:support", "host:1:a", 30) is None


def test_a_dead_holder_is_taken_over_at_once_and_a_release_frees_it(
        target: StoreTarget) -> None:
    store = target.store()
    assert store.acquire_lease("sweep", "host:1:a", 30) is not None
    taken = store.acquire_lease("sweep", "host:2:b", 30, dead=["host:1:a"])
    assert taken is not None and taken.epoch == 2
    store.release_lease("sweep", "host:2:b", 2)
    assert not store.leases()[0].live
    taken = store.acquire_lease("sweep", "host:3:c", 30)
    assert taken is not None and taken.epoch == 3


def test_a_stale_holder_cannot_record_an_effect(target: StoreTarget) -> None:
    old, new = target.store(), target.store()
    lease = old.acquire_lease("account:support", "host:1:a", 0.2)
    assert lease is not None
    fence = Fence("account:support", "host:1:a", lease.epoch)
    record = old.begin_message("support", "INBOX:1:1", sha256=None)
    old.set_pending(record.id, "new_ticket", {"external_id": "x"}, fence=fence)
    _until_expired(new, "account:support")
    assert new.acquire_lease("account:support", "host:2:b", 30) is not None
    with pytest.raises(LeaseLostError):
        old.finish_message(record.id, MessageState.DONE, action="new_ticket", ticket_id=7,
                           thread_ids=["m@x"], fence=fence)
    with pytest.raises(LeaseLostError):
        old.set_pending(record.id, "follow_up", {"ticket_id": 7}, fence=fence)
    kept = new.get_message("support", "INBOX:1:1")
    assert kept is not None and kept.state == MessageState.PUSHING and kept.ticket_id is None
    assert new.ticket_for_message_ids(["m@x"]) is None
    # The new holder's fence is good.
    newer = Fence("account:support", "host:2:b", 2, margin=5)
    new.finish_message(record.id, MessageState.DONE, action="new_ticket", ticket_id=7,
                       fence=newer)


def test_a_host_call_needs_the_margin_but_recording_its_outcome_does_not(
        target: StoreTarget) -> None:
    store = target.store()
    lease = store.acquire_lease("account:support", "host:1:a", 10)
    assert lease is not None
    record = store.begin_message("support", "INBOX:1:1", sha256=None)
    tight = Fence("account:support", "host:1:a", lease.epoch, margin=20)
    with pytest.raises(LeaseLostError, match="needs more than"):
        store.set_pending(record.id, "new_ticket", {"external_id": "x"}, fence=tight)
    assert store.get_message_by_id(record.id).state == MessageState.RECEIVED  # type: ignore[union-attr]
    store.finish_message(record.id, MessageState.IGNORED, action="ignore", fence=tight)


def _registered(keeper: LeaseKeeper) -> LeaseKeeper:
    """The first tick only registers the instance (so that instances starting together see
    each other before they take accounts)."""
    assert keeper.tick() == Changes() and not keeper.held_accounts()
    return keeper


def _keeper(target: StoreTarget, name: str, accounts: list[str],
            **kwargs: object) -> LeaseKeeper:
    return _registered(LeaseKeeper(target.store(), accounts, ttl=30, local_liveness=False,
                                   instance=f"host:{name}:x", **kwargs))  # type: ignore[arg-type]


def test_fair_share_spreads_accounts_and_a_newcomer_gets_its_share(
        target: StoreTarget) -> None:
    assert [fair_share(12, n) for n in (1, 2, 3, 5)] == [12, 6, 4, 3]
    accounts = [f"a{i}" for i in range(5)]
    one = _keeper(target, "one", accounts)
    assert sorted(one.tick().gained) == accounts
    two = _keeper(target, "two", accounts)
    assert two.tick().gained == ()  # registered, but nothing is free yet
    back = one.tick()
    assert len(back.hand_back) == 2 and back.gained == () and back.lost == ()
    assert one.workable() == sorted(set(accounts) - set(back.hand_back))
    for account in back.hand_back:  # their workers finished the mail in hand
        one.release(account)
    assert sorted(two.tick().gained) == sorted(back.hand_back)
    assert one.stats.share == 3 and two.stats.share == 3 and two.stats.live_instances == 2
    leases = {lease.resource: lease.holder for lease in one.store.leases() if lease.live}
    assert sum(h == one.instance for h in leases.values()) == 3
    assert sum(h == two.instance for h in leases.values()) == 2


def test_an_instance_that_stops_renewing_loses_its_accounts_to_the_others(
        target: StoreTarget) -> None:
    accounts = ["a", "b"]
    gone = _registered(LeaseKeeper(target.store(), accounts, ttl=0.3, local_liveness=False,
                                   instance="host:gone:x", sweep=True))
    assert sorted(gone.tick().gained) == accounts and gone.holds_sweep()
    fence = gone.fence("a")
    assert fence is not None and fence.epoch == 1
    # It stops ticking (killed, cut off); its instance row and leases run out.
    survivor = _keeper(target, "survivor", accounts, sweep=True)
    _until_expired(survivor.store, account_resource("a"))
    _until_expired(survivor.store, SWEEP)
    while any(i.live for i in survivor.store.instances() if i.instance == gone.instance):
        time.sleep(0.01)
    changes = survivor.tick()
    assert sorted(changes.gained) == accounts and survivor.holds_sweep()
    assert survivor.stats.takeovers == 3
    assert survivor.fence("a").epoch == 2  # type: ignore[union-attr]
    # The old one comes back: its renewal finds nothing of its own, so it stops working.
    back = gone.tick()
    assert sorted(back.lost) == accounts and gone.workable() == [] and not gone.holds_sweep()


def test_a_renewal_that_fails_keeps_the_leases_until_their_time_runs_out(
        tmp_path: Path) -> None:
    now = [1000.0]
    keeper = _registered(LeaseKeeper(SQLiteStore(tmp_path / "ledger.sqlite3"), ["a"], ttl=20,
                                     local_liveness=False, instance="host:k:x",
                                     clock=lambda: now[0]))
    assert keeper.tick().gained == ("a",)
    keeper.store.close()  # the database is gone
    now[0] += 5
    assert keeper.tick().lost == () and keeper.workable() == ["a"]
    assert keeper.healthy()
    now[0] += 5
    assert keeper.tick().lost == () and not keeper.healthy()
    now[0] += 11
    assert keeper.tick().lost == ("a",) and keeper.workable() == []
    status = keeper.status()
    assert status["renew_failures"] == 3 and status["healthy"] is False


def test_a_holder_whose_process_is_gone_is_taken_over_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    dead = _registered(LeaseKeeper(SQLiteStore(path), ["a"], ttl=600,
                                   instance="localhost-x:999999999:d"))
    dead.host = "localhost-x"
    assert dead.tick().gained == ("a",)
    import socket

    # A holder on this machine whose pid does not exist: gone.
    store = SQLiteStore(path)
    ghost = f"{socket.gethostname()}:999999999:g"
    assert store.acquire_lease("account:b", ghost, 600) is not None
    live = _registered(LeaseKeeper(store, ["a", "b"], ttl=600))
    gained = live.tick().gained
    assert "b" in gained and "a" not in gained  # the other machine's holder keeps "a"


def test_accounts_healthz_and_metrics_show_who_holds_what(tmp_path: Path) -> None:
    import json

    from bridge_cli import run_cli
    from zendesk_responses import write_config

    from connector.service.metrics import Metrics, health

    entries = [{"name": name, "protocol": "imap", "host": "127.0.0.1", "port": 143,
                "security": "none", "username": name, "password": "pw"}
               for name in ("one", "two", "three")]
    config = write_config(tmp_path, entries)
    target = StoreTarget("sqlite", str(tmp_path / "ledger.sqlite3"))
    now = [100.0]
    first = _keeper(target, "first", ["one", "two", "three"], sweep=True, clock=lambda: now[0],
                    url="http://127.0.0.1:8025")
    first.tick()
    first.release("three")
    second = _keeper(target, "second", ["three"])
    second.tick()

    code, lines = run_cli("-c", str(config), "accounts", "--json")
    assert code == 0
    rows = {row["account"]: row for row in json.loads("\n".join(lines))}
    assert (rows["one"]["holder"], rows["one"]["lease_epoch"]) == ("host:first:x", 1)
    assert (rows["three"]["holder"], rows["three"]["lease_epoch"]) == ("host:second:x", 2)
    assert 0 < rows["two"]["lease_expires_in"] <= 30
    code, lines = run_cli("-c", str(config), "accounts")
    assert "    worked by host:second:x (lease epoch 2, 30 s left)" in lines
    assert lines[lines.index("instances:") + 1].startswith(
        "    host:first:x (http://127.0.0.1:8025): live, 2 account(s), last heartbeat 20")
    assert lines[-2].endswith("; runs the sweep")

    first.tick()  # it sees the second instance now
    ok, report = health(first.store, ["one", "two"], first)  # type: ignore[arg-type]
    assert ok and report["leases"]["healthy"]
    assert sorted(report["leases"]["leases"]) == ["account:one", "account:two", "sweep"]
    assert report["leases"]["fair_share"] == 2 and report["leases"]["live_instances"] == 2
    metrics = Metrics()
    metrics.watch_leases(first)
    text = metrics.exposition().decode()
    assert 'pmb_lease_held{resource="account:one"} 1.0' in text
    assert 'pmb_lease_held_since_timestamp_seconds{resource="sweep"} 1.7' in text
    assert "pmb_lease_accounts_held 2.0" in text and "pmb_lease_renew_failures_total 0.0" in text

    first.store.close()  # the database is gone: two renewals fail, the instance is unhealthy
    for _ in range(2):
        now[0] += first.renew_every
        first.tick()
    ok, report = health(second.store, ["one"], first)  # type: ignore[arg-type]
    assert not ok and report["leases"]["renew_failures_in_a_row"] == 2
    target.close()


def test_a_keeper_without_accounts_takes_the_sweep_and_no_share(tmp_path: Path) -> None:
    """``serve`` (the outbound side alone) beside ``run`` instances: it may run the sweep, but
    the accounts are shared among the instances that work them."""
    target = StoreTarget("sqlite", str(tmp_path / "ledger.sqlite3"))
    outbound = LeaseKeeper(target.store(), [], ttl=30, local_liveness=False,
                           instance="host:serve:x", sweep=True)
    outbound.tick()  # at once: with no account to share, nothing to wait for
    assert outbound.holds_sweep()
    runner = _keeper(target, "run", ["a", "b"])
    assert sorted(runner.tick().gained) == ["a", "b"]  # the whole share: one live instance
    assert [i.instance for i in runner.store.instances()] == ["host:run:x"]
    target.close()


def test_an_instance_gone_for_an_hour_is_no_longer_listed(target: StoreTarget) -> None:
    store = target.store()
    store.heartbeat_instance("host:old:x", ttl=-3601, host="host", pid=1)  # gone long ago
    store.heartbeat_instance("host:recent:x", ttl=-60, host="host", pid=2)
    store.heartbeat_instance("host:live:x", ttl=30, host="host", pid=3)
    listed = {i.instance: i.live for i in store.instances()}
    assert listed == {"host:recent:x": False, "host:live:x": True}


def test_a_stop_hands_back_every_lease_but_those_of_a_worker_still_busy(
        target: StoreTarget) -> None:
    """A worker hung in a call that does not return (a server that stopped answering) does
    not hold the stop up, and its lease is not handed back: its call may still land, so the
    account waits for the lease to run out, as after a crash."""
    keeper = _keeper(target, "stopping", ["a", "b"])
    assert sorted(keeper.tick().gained) == ["a", "b"]
    hung, done = threading.Event(), threading.Event()
    busy = threading.Thread(target=hung.wait, name="account-a", daemon=True)
    ended = threading.Thread(target=done.set, name="account-b", daemon=True)
    busy.start()
    ended.start()
    try:
        assert join_workers([busy, ended], grace=0.2) == [busy] and done.is_set()
        keeper.release_all(keep=["a"])
        live = {lease.resource: lease.holder for lease in keeper.store.leases() if lease.live}
        assert live == {account_resource("a"): keeper.instance}
        assert keeper.held_accounts() == []
    finally:
        hung.set()
