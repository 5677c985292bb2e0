"""Several ``run`` instances on one ledger: who works which account, and who runs the sweep.

Each account is worked by one instance at a time, the holder of its **lease**: a row in the
store (``leases``: resource ``account:<name>`` or ``sweep``, holder, epoch, expiry). Each
instance registers itself with a heartbeat (``instances``), renews its leases every
``ttl / 4`` and takes free or expired accounts up to its fair share, ``ceil(accounts / live
instances)``; one holding more hands the extras back after the mail in hand, so a new instance
gets its share without anyone stopping. The sweep of the outbound queue is one more lease.

Why a row lease and not PostgreSQL's session-level advisory locks:

- Expiry is judged by the **database's clock** (``now`` in the statement that reads or renews
  a lease), never an instance's, so clock skew between machines does not matter. An advisory
  lock lives as long as its database session, and the server learns that a session is dead
  only when TCP tells it: after a network cut to the database, with default keepalives, that
  is hours, not a bounded ``ttl``. A row lease expires ``ttl`` seconds after its last renewal
  whatever happened to the network.
- A lock is a yes/no; a lease carries an **epoch** that grows with every new holder: a
  fencing token. Every effect is committed under it (:class:`connector.store.base.Fence`,
  checked in the transaction of ``set_pending`` and ``finish_message``), so an instance that
  paused (a long GC, SIGSTOP, a VM migration) and comes back after losing its lease cannot
  record anything: its write is refused and it stops working the account. A held advisory
  lock says nothing to the transaction that commits the effect.
- Session locks pin a pooled connection for as long as they are held, and a reset or
  recycled pool connection silently drops them; a lease is a row any connection can renew.
- It works the same on SQLite (several processes on one machine sharing one file) and on
  PostgreSQL, and ``postmaster-bridge accounts`` can show who holds what and until when.

Bounds. An instance that dies (SIGKILL, power, network cut) loses its leases at most ``ttl``
seconds after its last renewal; the next tick of another instance (every ``ttl / 4``) takes
the accounts over, and their first pass resumes interrupted host calls from the ledger's
pending state exactly as a restart does. On one machine (``local_liveness``), a holder whose
process is gone is taken over at once. A host call only starts while the lease has more than
``ttl / 3`` left (checked with the durable ``set_pending`` before it), so the old holder's
last call began at least that long before anyone else can take the account; the new holder
looks before it repeats (idempotency key, ``external_id``, the comment's key on the ticket).
An instance that cannot renew stops working its accounts when its own conservative view of
the lease (``ttl`` after the start of the last successful renewal) runs out.

What no lease can fence: a process frozen *inside* a helpdesk call (SIGSTOP, a paused VM)
for longer than ``ttl / 3`` sends that request when it wakes, after its successor looked for
it. A ticket create is still one ticket (the same Idempotency-Key, or the successor's lookup
by ``external_id`` found nothing yet and the key makes the two one); a comment can then appear
twice, since a helpdesk update carries no token the bridge could make it check. The ledger
records it once (the woken process's record is refused). Choose ``ttl`` well above the
longest freeze you expect; a crash (SIGKILL, power, a cut) never does this.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connector.outbound.queue import owner_dead, process_owner
from connector.store.base import Fence, Lease, Store

log = logging.getLogger("connector.leases")

ACCOUNT_PREFIX = "account:"
SWEEP = "sweep"


def account_resource(account: str) -> str:
    return f"{ACCOUNT_PREFIX}{account}"


def fair_share(accounts: int, live_instances: int) -> int:
    """The most accounts one instance keeps: they spread evenly, none left over."""
    return math.ceil(accounts / max(1, live_instances))


@dataclass
class HeldLease:
    lease: Lease
    #: Local monotonic time until which this instance may be sure it holds the lease: the
    #: start of the last successful renewal plus ttl (the database's expiry is no earlier).
    valid_until: float
    #: Handed back: its worker finishes the mail in hand, then the lease is released.
    releasing: bool = False


@dataclass(frozen=True)
class Changes:
    """What a tick decided, by account name."""

    gained: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    hand_back: tuple[str, ...] = ()


@dataclass
class LeaseStats:
    renewals: int = 0
    renew_failures: int = 0  # in total
    failures_in_a_row: int = 0
    last_renewed: float | None = None  # monotonic
    last_error: str | None = None
    takeovers: int = 0
    handed_back: int = 0
    lost: int = 0
    share: int = 0
    live_instances: int = 0


class LeaseKeeper:
    """One instance's leases: its heartbeat, the accounts it holds, the sweep. ``tick()`` is
    called by the service every ``tick_every`` seconds (renewing every ``renew_every``);
    thread-safe for readers (the workers' fences, /healthz, /metrics)."""

    def __init__(self, store: Store, accounts: Sequence[str], *, ttl: float = 20.0,
                 local_liveness: bool = True, sweep: bool = False, url: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 instance: str | None = None) -> None:
        self.store = store
        self.accounts = list(accounts)
        self.ttl = ttl
        self.local_liveness = local_liveness
        self.want_sweep = sweep
        self.url = url
        self.clock = clock
        self.instance = instance or process_owner(uuid.uuid4().hex[:8])
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.stats = LeaseStats()
        self._held: dict[str, HeldLease] = {}
        self._lock = threading.Lock()
        #: When the next renewal is due (monotonic); None: registered, nothing taken yet.
        self._next_renewal: float | None = None
        # Instances try the accounts in different orders, so that starting together they
        # do not all reach for the same one first.
        start = zlib.crc32(self.instance.encode()) % max(1, len(self.accounts))
        self._order = self.accounts[start:] + self.accounts[:start]

    # -- timing ----------------------------------------------------------------------------
    @property
    def renew_every(self) -> float:
        return self.ttl / 4

    @property
    def tick_every(self) -> float:
        """Free accounts and a new instance's share are looked at this often (cheap reads);
        the renewal (writes) comes every ``renew_every``."""
        return min(1.0, self.renew_every)

    @property
    def effect_margin(self) -> float:
        """A host call starts only while the lease has more than this left."""
        return self.ttl / 3

    # -- what workers and observers read ---------------------------------------------------
    def fence(self, account: str) -> Fence | None:
        with self._lock:
            held = self._held.get(account_resource(account))
            if held is None:
                return None
            return Fence(held.lease.resource, self.instance, held.lease.epoch,
                         margin=self.effect_margin)

    def holds(self, resource: str) -> bool:
        """True while this instance is sure it holds ``resource`` (its own view; the
        database's fence is the final word)."""
        with self._lock:
            held = self._held.get(resource)
            return held is not None and self.clock() < held.valid_until

    def holds_sweep(self) -> bool:
        return self.holds(SWEEP)

    def held_accounts(self) -> list[str]:
        with self._lock:
            return sorted(r[len(ACCOUNT_PREFIX):] for r in self._held
                          if r.startswith(ACCOUNT_PREFIX))

    def workable(self) -> list[str]:
        """The accounts to work now: held, sure of it, and not being handed back."""
        now = self.clock()
        with self._lock:
            return sorted(r[len(ACCOUNT_PREFIX):] for r, h in self._held.items()
                          if r.startswith(ACCOUNT_PREFIX) and not h.releasing
                          and now < h.valid_until)

    def healthy(self) -> bool:
        """False when the leases cannot be renewed: the last two attempts failed, or the
        last success is older than ttl."""
        stats = self.stats
        if stats.failures_in_a_row >= 2:
            return False
        return stats.last_renewed is None or self.clock() - stats.last_renewed < self.ttl

    def status(self) -> dict[str, Any]:
        """For /healthz: the instance, its share and each lease it holds."""
        now = self.clock()
        with self._lock:
            held = {r: h for r, h in self._held.items()}
        stats = self.stats
        return {
            "instance": self.instance, "healthy": self.healthy(), "ttl": self.ttl,
            "live_instances": stats.live_instances, "fair_share": stats.share,
            "renew_failures": stats.renew_failures,
            "renew_failures_in_a_row": stats.failures_in_a_row,
            "last_renewed_seconds_ago": round(now - stats.last_renewed, 3)
            if stats.last_renewed is not None else None,
            "last_error": stats.last_error,
            "leases": {r: {"epoch": h.lease.epoch,
                           "held_since": h.lease.acquired_at.isoformat(),
                           "valid_for": round(h.valid_until - now, 3),
                           "releasing": h.releasing} for r, h in sorted(held.items())},
        }

    # -- the tick --------------------------------------------------------------------------
    def tick(self) -> Changes:
        """Heartbeat and renew when due, then take or hand back accounts toward the fair
        share. The first tick only registers the instance, so that instances started
        together see each other before they reach for accounts."""
        started = self.clock()
        first = self._next_renewal is None
        lost: tuple[str, ...] = ()
        if first or started >= (self._next_renewal or 0.0) or self.stats.failures_in_a_row:
            try:
                if self.accounts:  # only instances that work accounts count in the shares
                    self.store.heartbeat_instance(self.instance, ttl=self.ttl,
                                                  host=self.host, pid=self.pid, url=self.url)
                with self._lock:
                    epochs = {r: h.lease.epoch for r, h in self._held.items()}
                renewed = self.store.renew_leases(self.instance, epochs, self.ttl) \
                    if epochs else {}
            except Exception as exc:  # the database is unreachable or failing
                self._next_renewal = started + self.tick_every
                return self._renewal_failed(exc, started)
            self._next_renewal = started + self.renew_every
            lost = self._renewed(renewed, started)
        if first and self.accounts:
            return Changes()
        try:
            gained, hand_back = self._balance(started)
        except Exception as exc:
            log.warning("instance %s: could not look for accounts to take: %s",
                        self.instance, exc)
            gained, hand_back = (), ()
        return Changes(gained=gained, lost=lost, hand_back=hand_back)

    def _renewal_failed(self, exc: Exception, started: float) -> Changes:
        stats = self.stats
        stats.renew_failures += 1
        stats.failures_in_a_row += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("instance %s: leases not renewed (%d in a row): %s", self.instance,
                    stats.failures_in_a_row, exc)
        with self._lock:
            gone = [r for r, h in self._held.items() if started >= h.valid_until]
            for resource in gone:
                del self._held[resource]
        stats.lost += len(gone)
        lost = tuple(r[len(ACCOUNT_PREFIX):] for r in gone if r.startswith(ACCOUNT_PREFIX))
        if lost:
            log.error("instance %s: leases ran out without a renewal; stopping work on %s",
                      self.instance, ", ".join(lost))
        return Changes(lost=lost)

    def _renewed(self, renewed: dict[str, Lease], started: float) -> tuple[str, ...]:
        stats = self.stats
        stats.renewals += 1
        stats.failures_in_a_row = 0
        stats.last_renewed = started
        lost: list[str] = []
        with self._lock:
            for resource in list(self._held):
                lease = renewed.get(resource)
                if lease is None:
                    del self._held[resource]
                    lost.append(resource)
                else:
                    held = self._held[resource]
                    held.lease, held.valid_until = lease, started + self.ttl
        if lost:
            stats.lost += len(lost)
            log.error("instance %s: lost %s to another instance; stopping work there",
                      self.instance, ", ".join(lost))
        return tuple(r[len(ACCOUNT_PREFIX):] for r in lost if r.startswith(ACCOUNT_PREFIX))

    def _dead_holders(self) -> set[str]:
        """Holders on this machine whose process is gone (or an earlier service of this
        process): their leases need not run out first."""
        if not self.local_liveness:
            return set()
        holders = {i.instance for i in self.store.instances()}
        holders |= {lease.holder for lease in self.store.leases() if lease.live}
        return {h for h in holders if h != self.instance and owner_dead(h, self.instance)}

    def _balance(self, started: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
        dead = self._dead_holders()
        live = [i for i in self.store.instances() if i.live and i.instance not in dead]
        share = fair_share(len(self.accounts), len(live))
        self.stats.share, self.stats.live_instances = share, len(live)
        with self._lock:
            mine = [r for r, h in self._held.items()
                    if r.startswith(ACCOUNT_PREFIX) and not h.releasing]
        gained: list[str] = []
        for account in self._order:
            if len(mine) + len(gained) >= share:
                break
            resource = account_resource(account)
            with self._lock:
                if resource in self._held:
                    continue
            if self._take(resource, dead, started):
                gained.append(account)
        hand_back: list[str] = []
        extra = len(mine) - share
        if extra > 0:
            with self._lock:
                # The most recently taken go back first: the others keep their connections.
                newest = sorted(mine, key=lambda r: self._held[r].lease.acquired_at,
                                reverse=True)[:extra]
                for resource in newest:
                    self._held[resource].releasing = True
            hand_back = [r[len(ACCOUNT_PREFIX):] for r in newest]
            self.stats.handed_back += len(hand_back)
            log.info("instance %s: %d live instance(s), share %d: handing back %s",
                     self.instance, len(live), share, ", ".join(hand_back))
        if self.want_sweep and not self.holds(SWEEP):
            self._take(SWEEP, dead, started)
        return tuple(gained), tuple(hand_back)

    def _take(self, resource: str, dead: set[str], started: float) -> bool:
        before = {lease.resource: lease for lease in self.store.leases()}.get(resource)
        lease = self.store.acquire_lease(resource, self.instance, self.ttl, dead=dead)
        if lease is None:
            return False
        with self._lock:
            self._held[resource] = HeldLease(lease, started + self.ttl)
        if before is not None and before.holder not in ("", self.instance):
            self.stats.takeovers += 1
            why = "its process is gone" if before.live else "its lease expired"
            log.warning("instance %s: took %s (epoch %d) over from %s (%s)", self.instance,
                        resource, lease.epoch, before.holder, why)
        else:
            log.info("instance %s: took %s (epoch %d)", self.instance, resource, lease.epoch)
        return True

    # -- run --once, stopping ----------------------------------------------------------------
    def take_all(self) -> dict[str, str]:
        """For one pass (``run --once``): take every account that is free; returns those
        another live instance holds, with their holder."""
        started = self.clock()
        self.store.heartbeat_instance(self.instance, ttl=self.ttl, host=self.host,
                                      pid=self.pid, url=self.url)
        dead = self._dead_holders()
        busy: dict[str, str] = {}
        for account in self.accounts:
            if not self._take(account_resource(account), dead, started):
                holder = {lease.resource: lease.holder for lease in self.store.leases()}
                busy[account] = holder.get(account_resource(account), "?")
        return busy

    def release(self, account: str, epoch: int | None = None) -> None:
        """Hand ``account`` back now (its worker has stopped). With ``epoch``, only the
        lease of that epoch: a worker that stopped after its lease was lost must not hand
        back the one taken again since for its successor."""
        self._release(account_resource(account), epoch)

    def _release(self, resource: str, epoch: int | None = None) -> None:
        with self._lock:
            held = self._held.get(resource)
            if held is None or (epoch is not None and held.lease.epoch != epoch):
                return
            del self._held[resource]
        try:
            self.store.release_lease(resource, self.instance, held.lease.epoch)
            log.info("instance %s: released %s", self.instance, resource)
        except Exception as exc:  # it runs out by itself
            log.warning("instance %s: could not release %s (it expires within %.0f s): %s",
                        self.instance, resource, self.ttl, exc)

    def release_all(self) -> None:
        """On a clean stop: every lease back at once (nobody waits for them to run out).
        Not while the store is failing: each attempt could wait as long as a connection
        does, and the leases run out by themselves within ttl."""
        if self.stats.failures_in_a_row:
            log.warning("instance %s: the store is failing; its leases are not handed back "
                        "but run out within %.0f s", self.instance, self.ttl)
            with self._lock:
                self._held.clear()
            return
        with self._lock:
            resources = list(self._held)
        for resource in resources:
            self._release(resource)
        try:
            self.store.forget_instance(self.instance)
        except Exception as exc:
            log.warning("instance %s: could not deregister: %s", self.instance, exc)
