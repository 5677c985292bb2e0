"""Several instances on one ledger (``bench/run.py instances``).

Throughput: the corpus spread over ``--accounts`` IMAP mailboxes on one Dovecot (a whole
conversation in one mailbox, so replies find their ticket), then 1, 2, ... ``--instances``
``postmaster-bridge run`` processes started together on one ledger against the zero-latency
host double; mails/s is measured between 10 % and 90 % of the records finished (so the
processes' start-up is not in it), read from the ledger. Every run gets fresh mailboxes, a fresh
ledger and new tokens.

Takeover: ``--instances`` processes idle on their shares; one is SIGKILLed, and the time until
every account it held is held by a live other instance is read from the ``leases`` table;
then it is started again and the shares even out before the next kill. ``--kills`` of them
give p50/p95, with ``leases.local_liveness`` off (the bound for instances on different
machines: ``ttl`` plus up to ``ttl / 4`` for the next tick) and on (one machine: the dead
process is seen at the next tick).

``--store postgresql`` runs both against a private PostgreSQL (tests/postgres.py's server, but
with ``fsync``, ``full_page_writes`` and the WAL writer as a production server has them, so
its commits cost what SQLite's ``synchronous=FULL`` ones do).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import corpus
from dovecot import DovecotServer, MailUser
from harness import REPO, SUPPORT_ADDRESS
from host_double import HostDouble
from idle import percentile, stop_bridge

PASSWORD = "bench-instances-password"
_IN_REPLY_TO = re.compile(rb"^In-Reply-To:\s*(<[^>]+>)", re.MULTILINE | re.IGNORECASE)


def spread(mails: list[corpus.CorpusMail], accounts: int) -> list[list[bytes]]:
    """Round-robin by conversation: a reply goes where the mail it answers went."""
    boxes: list[list[bytes]] = [[] for _ in range(accounts)]
    home: dict[str, int] = {}
    turn = 0
    for mail in mails:
        head = mail.raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
        parent = _IN_REPLY_TO.search(head)
        box = home.get(parent.group(1).decode()) if parent else None
        if box is None:
            box, turn = turn % accounts, turn + 1
        home[mail.message_id] = box
        boxes[box].append(mail.raw)
    return boxes


class Ledger:
    """The store as the benchmark reads it (never through the bridge's code): a SQLite file
    read-only, or a PostgreSQL database."""

    def __init__(self, path: Path, dsn: str | None) -> None:
        self.path, self.dsn = path, dsn

    def config(self) -> str:
        if self.dsn is None:
            return f"store:\n  path: {self.path}"
        secret = self.path.parent / "dsn"
        secret.write_text(self.dsn)
        return f"store:\n  type: postgresql\n  dsn_file: {secret}"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.dsn is not None:
            import psycopg

            try:
                with psycopg.connect(self.dsn) as conn:
                    return conn.execute(sql.replace("(julianday('now') - 2440587.5) * 86400.0",
                                                    "EXTRACT(EPOCH FROM now())")).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            conn.close()


class DurablePostgres:
    """tests/postgres.py's server as production runs it (``durable``: fsync and full-page
    writes on, the WAL writer at its default delay; the tests turn these off for speed)."""

    def __init__(self) -> None:
        from postgres import PostgresServer, postgres_bindir

        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/install-test-deps.sh)")
        self.server = PostgresServer(bindir, durable=True)

    def __enter__(self) -> Any:
        self.server.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def _write_config(path: Path, ledger: Ledger, dovecot: DovecotServer, users: list[MailUser],
                  host: Any, *, ttl: float, local_liveness: bool) -> Path:
    secret = path.parent / "imap-password"
    secret.write_text(PASSWORD)
    token = path.parent / "host-token"
    token.write_text(getattr(host, "api_token", "bench-token"))
    lines = [
        ledger.config(),
        f"leases:\n  ttl: {ttl}\n  local_liveness: {'true' if local_liveness else 'false'}",
        f"host:\n  type: zendesk\n  url: {host.url}\n  timeout: 60\n"
        f"  auth:\n    type: api_token\n    email: bench@example.com\n"
        f"    api_token_file: {token}",
        "accounts:"]
    for user in users:
        lines.append(
            f"  - name: {user.name}\n    protocol: imap\n    host: 127.0.0.1\n"
            f"    port: {dovecot.imap_port}\n    security: none\n    username: {user.name}\n"
            f"    password_file: {secret}\n    poll_interval: 0.05\n"
            f"    own_addresses: [{SUPPORT_ADDRESS}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--config", str(config), "run"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _finished(ledger: Ledger) -> int:
    rows = ledger.query("SELECT COUNT(*) FROM messages WHERE state NOT IN "
                        "('received', 'pushing')")
    return int(rows[0][0]) if rows else 0


def _holders(ledger: Ledger) -> dict[str, str]:
    """account -> holder of its live lease."""
    rows = ledger.query("SELECT resource, holder FROM leases WHERE expires_at > "
                        "(julianday('now') - 2440587.5) * 86400.0")
    return {r[0].split(":", 1)[1]: r[1] for r in rows if r[0].startswith("account:")}


def _wait(predicate: Any, timeout: float, step: float = 0.05) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None


def throughput(args: argparse.Namespace, workdir: Path, dovecot: DovecotServer,
               mails: list[corpus.CorpusMail], instances: int,
               pg: Any | None) -> dict[str, Any]:
    run = workdir / f"throughput-{instances}"
    run.mkdir()
    users = [dovecot.add_user(f"t{instances}x{n:02d}", PASSWORD) for n in range(args.accounts)]
    boxes = spread(mails, args.accounts)
    for user, raws in zip(users, boxes, strict=True):
        dovecot.append(user, raws)
    total = sum(len(b) for b in boxes)
    ledger = Ledger(run / "ledger.sqlite3", pg.fresh_database() if pg is not None else None)
    with HostDouble() as host:
        config = _write_config(run / "bridge.yaml", ledger, dovecot, users, host,
                               ttl=args.ttl, local_liveness=True)
        procs = [_start(config, run / f"instance{i}.log") for i in range(instances)]
        marks: dict[float, float] = {}
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.timeout:
                done = _finished(ledger)
                for share in (0.1, 0.9, 1.0):
                    if share not in marks and done >= share * total:
                        marks[share] = time.monotonic()
                if 1.0 in marks or any(p.poll() is not None for p in procs):
                    break
                time.sleep(0.05)
        finally:
            for proc in procs:
                stop_bridge(proc, 60)
    if 0.9 not in marks:
        raise RuntimeError(f"{instances} instance(s): not finished, see {run}")
    rate = 0.8 * total / (marks[0.9] - marks[0.1])
    result = {"instances": instances, "mails": total, "msgs_per_s": round(rate, 1),
              "wall_s": round(marks.get(1.0, marks[0.9]) - started, 1)}
    print(f"  {instances} instance(s): {result['msgs_per_s']} msgs/s (10-90 % of "
          f"{total} mails), all done {result['wall_s']} s after start", flush=True)
    return result


def takeovers(args: argparse.Namespace, workdir: Path, dovecot: DovecotServer,
              local_liveness: bool, pg: Any | None) -> dict[str, Any]:
    run = workdir / f"takeover-{'local' if local_liveness else 'expiry'}"
    run.mkdir()
    users = [dovecot.add_user(f"k{int(local_liveness)}x{n:02d}", PASSWORD)
             for n in range(args.accounts)]
    ledger = Ledger(run / "ledger.sqlite3", pg.fresh_database() if pg is not None else None)
    share = args.accounts // args.instances
    times: list[float] = []
    with HostDouble() as host:
        config = _write_config(run / "bridge.yaml", ledger, dovecot, users, host,
                               ttl=args.ttl, local_liveness=local_liveness)
        procs = [_start(config, run / f"instance{i}.log") for i in range(args.instances)]
        try:
            for kill in range(args.kills):
                even = _wait(lambda: sorted(_count(_holders(ledger)).values())
                             == [share] * args.instances, 120)
                if even is None:
                    raise RuntimeError(f"shares never evened out; see {run}")
                victim = kill % args.instances
                held = _holders(ledger)
                pid = procs[victim].pid
                mine = [a for a, h in held.items() if h.split(":")[1] == str(pid)]
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                procs[victim].wait(10)
                took = _wait(lambda mine=mine, pid=pid: all(
                    (h := _holders(ledger).get(a)) is not None and h.split(":")[1] != str(pid)
                    for a in mine), 120, step=0.02)
                if took is None:
                    raise RuntimeError(f"accounts not taken over; see {run}")
                times.append(time.monotonic() - killed_at)
                print(f"    kill {kill}: {len(mine)} accounts taken over after "
                      f"{times[-1]:.2f} s", flush=True)
                procs[victim] = _start(config, run / f"instance{victim}.log")
        finally:
            for proc in procs:
                stop_bridge(proc, 60)
    result = {"local_liveness": local_liveness, "ttl": args.ttl, "kills": len(times),
              "p50_s": round(statistics.median(times), 2),
              "p95_s": round(percentile(times, 0.95), 2), "max_s": round(max(times), 2)}
    print(f"  takeover after SIGKILL (ttl {args.ttl} s, local_liveness "
          f"{'on' if local_liveness else 'off'}): p50 {result['p50_s']} s, p95 "
          f"{result['p95_s']} s, max {result['max_s']} s over {len(times)} kills", flush=True)
    return result


def _count(holders: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for holder in holders.values():
        counts[holder] = counts.get(holder, 0) + 1
    return counts


def run_instances(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pmb-inst-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    (workdir / "dovecot").mkdir(exist_ok=True)
    dovecot = DovecotServer(workdir / "dovecot")
    dovecot.start()
    result: dict[str, Any] = {"accounts": args.accounts, "ttl": args.ttl, "store": args.store}
    with contextlib.ExitStack() as stack:
        stack.callback(dovecot.kill)
        stack.callback(dovecot.stop)
        pg = stack.enter_context(DurablePostgres()) if args.store == "postgresql" else None
        print(f"store: {args.store}", flush=True)
        if not args.skip_throughput:
            mails = list(corpus.generate(args.count, args.scale, args.seed))
            print(f"corpus: {len(mails)} mails, {sum(m.size for m in mails) / 1e6:.1f} MB, "
                  f"over {args.accounts} accounts", flush=True)
            result["throughput"] = [throughput(args, workdir, dovecot, mails, n, pg)
                                    for n in range(1, args.instances + 1)]
        if args.kills:
            result["takeover"] = [takeovers(args, workdir, dovecot, local, pg)
                                  for local in (False, True)]
    return result
