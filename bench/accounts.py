"""Many mailboxes on one bridge (``bench/run.py accounts --count N``).

One ``postmaster-bridge run`` process serves N IMAP accounts (IDLE on, a 30-minute poll
interval, so only IDLE and reconnection make anything happen quickly) against a private
Dovecot and the zero-latency host double. Printed:

- start-up: seconds from the bridge's start until all N accounts are idling, and the
  connection failures (refused or timed-out logins) during it;
- the bridge's RSS and threads once idle, and its CPU over ``--idle-seconds`` (60) of idling;
- APPEND -> ticket create p50/p95 over ``--mails`` mails spread over the accounts;
- recovery after a Dovecot restart: Dovecot stopped, one mail delivered into every mailbox
  meanwhile (straight into the maildir, as the MDA would), Dovecot started; then the seconds
  until every account idles again and until every outage mail is a ticket, and the
  reconnections and failed attempts it took.

The account states come from the ledger's ``connection_status`` table (what ``accounts``
shows), read-only; ticket creates and their arrival times from the host double.

Dovecot settings for many connections (``--dovecot many``, the default; ``stock`` keeps the
test configuration): one ``imap`` process per IDLE connection, so ``service imap
{ process_limit }`` above N; login processes in high-performance mode (``service imap-login
{ service_count = 0; process_min_avail; client_limit }``) instead of one process per login
capped at ``default_process_limit`` (100); ``default_client_limit`` above the connections of
every service. The kernel: Dovecot watches each IDLE mailbox with inotify, one instance per
``imap`` process, so ``fs.inotify.max_user_instances`` (128 by default) must exceed N, or
Dovecot falls back to checking every ``mailbox_idle_check_interval`` (30 s) and new mail waits
that long; the benchmark prints a warning when it is too low. File descriptors: the bridge
holds one socket per account (``ulimit -n`` above N + 100).
"""

from __future__ import annotations

import argparse
import email.policy
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from dovecot import DovecotServer, MailUser
from harness import REPO, SUPPORT_ADDRESS
from host_double import HostDouble, process_cpu_seconds
from idle import creates_by_token, percentile, stop_bridge

POLL_MINUTES = 30.0
PASSWORD = "bench-accounts-password"


def dovecot_tuning(count: int) -> str:
    """Process and client limits for ``count`` IDLE connections (see the module docstring)."""
    processes = count + 200
    return f"""
# bench/accounts.py: room for {count} accounts in IDLE.
default_process_limit = {processes}
default_client_limit = {4 * processes}
service imap-login {{
  service_count = 0
  process_min_avail = 2
  client_limit = {processes}
}}
service imap {{
  process_limit = {processes}
}}
service anvil {{
  client_limit = {4 * processes}
}}
"""


def _mail(subject: str, token: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Cliente {token} <cliente-{token}@example.org>"
    msg["To"] = SUPPORT_ADDRESS
    msg["Subject"] = f"{subject} (ref {token})"
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0100"
    msg["Message-ID"] = f"<{token}@bench.example.org>"
    msg.set_content(f"Buongiorno,\nrichiesta {token}.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def _write_config(workdir: Path, dovecot: DovecotServer, users: list[MailUser], host: Any,
                  args: argparse.Namespace) -> Path:
    (workdir / "imap-password").write_text(PASSWORD)
    (workdir / "host-token").write_text(getattr(host, "api_token", "bench-token"))
    lines = [
        f"store:\n  path: {workdir / 'ledger.sqlite3'}",
        f"host:\n  type: zendesk\n  url: {host.url}\n  timeout: 60\n"
        f"  auth:\n    type: api_token\n    email: bench@example.com\n"
        f"    api_token_file: {workdir / 'host-token'}",
        f"connections:\n  login_rate: {args.login_rate}\n  login_burst: {args.login_burst}\n"
        f"  max_connections: {len(users) + 10}",
        "accounts:"]
    for number, user in enumerate(users):
        lines.append(
            f"  - name: acct{number:04d}\n    protocol: imap\n    host: 127.0.0.1\n"
            f"    port: {dovecot.imap_port}\n    security: none\n    username: {user.name}\n"
            f"    password_file: {workdir / 'imap-password'}\n"
            f"    poll_interval: {POLL_MINUTES}\n    own_addresses: [{SUPPORT_ADDRESS}]")
    config = workdir / "bridge.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


class Ledger:
    """The bridge's ledger, read-only: account states and connection events."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        return self._db

    def idling(self, since_iso: str | None = None) -> int:
        if not self.path.exists():
            return 0
        sql = "SELECT COUNT(*) FROM connection_status WHERE state = 'idling'"
        params: tuple[str, ...] = ()
        if since_iso is not None:
            sql += " AND since >= ?"
            params = (since_iso,)
        try:
            return int(self._conn().execute(sql, params).fetchone()[0])
        except sqlite3.OperationalError:  # the table is made at the bridge's start
            return 0

    def events(self, event: str, since_iso: str = "") -> int:
        if not self.path.exists():
            return 0
        try:
            return int(self._conn().execute(
                "SELECT COUNT(*) FROM comm_log WHERE event = ? AND ts >= ?",
                (event, since_iso)).fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds")


def _proc_status(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            found[key] = int(value.split()[0])
    return found


def _wait(predicate: Any, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def run_accounts(args: argparse.Namespace) -> dict[str, Any]:
    count = args.count
    inotify = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    if inotify < count + 10:
        print(f"warning: fs.inotify.max_user_instances is {inotify}, below {count + 10}: "
              "Dovecot watches mailboxes past that limit every 30 s instead of at once "
              "(sysctl -w fs.inotify.max_user_instances=4096)", flush=True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pmb-acc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    tuning = dovecot_tuning(count) if args.dovecot == "many" else ""
    dovecot = DovecotServer(workdir / "dovecot", extra_config=tuning)
    (workdir / "dovecot").mkdir(exist_ok=True)
    dovecot.start()
    host = HostDouble().start()
    bridge: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {"accounts": count, "dovecot": args.dovecot,
                              "login_rate": args.login_rate, "login_burst": args.login_burst,
                              "inotify_max_user_instances": inotify}
    try:
        users = [dovecot.add_user(f"acct{n:04d}", PASSWORD) for n in range(count)]
        config = _write_config(workdir, dovecot, users, host, args)
        ledger = Ledger(workdir / "ledger.sqlite3")
        log_path = workdir / "bridge.log"
        environment = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        started_iso = _now_iso()
        with open(log_path, "wb") as out:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(config), "run"],
                stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=REPO)
        startup = _wait(lambda: ledger.idling() >= count or bridge.poll() is not None,
                        args.timeout)
        if bridge.poll() is not None:
            raise RuntimeError(f"the bridge exited; see {log_path}")
        result["startup_s"] = round(startup, 1) if startup is not None else None
        result["startup_idling"] = ledger.idling()
        result["startup_failed_logins"] = ledger.events("connection failed", started_iso)
        print(f"accounts {count}: all idling {result['startup_s']} s after start "
              f"({result['startup_idling']}/{count} idling; failed connection attempts "
              f"{result['startup_failed_logins']})", flush=True)

        time.sleep(5)  # let the start-up's garbage and log writes settle
        status = _proc_status(bridge.pid)
        cpu0, wall0 = process_cpu_seconds(bridge.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, wall1 = process_cpu_seconds(bridge.pid), time.monotonic()
        result.update({"rss_mb": round(status["VmRSS"] / 1024, 1),
                       "threads": status["Threads"],
                       "idle_cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
                       "idle_seconds": round(wall1 - wall0, 1)})
        print(f"  idle: RSS {result['rss_mb']} MB, {result['threads']} threads, CPU "
              f"{result['idle_cpu_pct']} % of a core over {result['idle_seconds']} s",
              flush=True)

        latencies = _latency(dovecot, users, host, args)
        if latencies:
            result.update({"mails": len(latencies),
                           "p50_ms": round(1000 * statistics.median(latencies), 1),
                           "p95_ms": round(1000 * percentile(latencies, 0.95), 1)})
            print(f"  APPEND -> ticket: {len(latencies)} mails, p50 {result['p50_ms']} ms, "
                  f"p95 {result['p95_ms']} ms", flush=True)

        result.update(_recovery(dovecot, users, host, ledger, args))
        print(f"  restart ({result['outage_s']} s down, {count} mails delivered meanwhile): "
              f"all idling again {result['recovery_idle_s']} s after Dovecot was back, "
              f"outage mail ticketed {result['recovery_ticketed']}/{count} after "
              f"{result['recovery_tickets_s']} s; reconnections "
              f"{result['reconnected']}, lost {result['connection_lost']}, failed attempts "
              f"{result['recovery_failed']}", flush=True)
        status = _proc_status(bridge.pid)
        result["peak_rss_mb"] = round(status["VmHWM"] / 1024, 1)
        print(f"  peak RSS {result['peak_rss_mb']} MB", flush=True)
    finally:
        if bridge is not None:
            stop_bridge(bridge, 60)
        host.stop()
        dovecot.stop()
        dovecot.kill()
    return result


def _latency(dovecot: DovecotServer, users: list[MailUser], host: Any,
             args: argparse.Namespace) -> list[float]:
    """One mail at a time into accounts spread over the whole set; APPEND -> create."""
    from connector.fetch.imap import QuietIMAPClient

    latencies: list[float] = []
    step = max(1, len(users) // max(1, args.mails))
    for number in range(args.mails):
        user = users[(number * step) % len(users)]
        token = f"lat{number}-{secrets.token_hex(3)}"
        client = QuietIMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=30)
        client.login(user.name, PASSWORD)
        sent = time.monotonic()
        client.append("INBOX", _mail("Latenza", token))
        client.logout()
        if _wait(lambda token=token: token in creates_by_token(host), 60, 0.01) is None:
            print(f"  no ticket for {token} within 60 s", flush=True)
            continue
        latencies.append(creates_by_token(host)[token] - sent)
        time.sleep(args.gap)
    return latencies


def _recovery(dovecot: DovecotServer, users: list[MailUser], host: Any, ledger: Ledger,
              args: argparse.Namespace) -> dict[str, Any]:
    before_iso = _now_iso()
    down = time.monotonic()
    dovecot.stop()
    tokens = []
    for number, user in enumerate(users):
        token = f"out{number}-{secrets.token_hex(3)}"
        dovecot.deliver_offline(user, _mail("Durante il riavvio", token))
        tokens.append(token)
    remaining = args.outage - (time.monotonic() - down)
    if remaining > 0:
        time.sleep(remaining)
    dovecot.start()
    back = time.monotonic()
    back_iso = _now_iso()
    outage = back - down
    count = len(users)
    idle_s = _wait(lambda: ledger.idling(back_iso) >= count, args.timeout)
    wanted = set(tokens)
    done = _wait(lambda: wanted <= set(creates_by_token(host)), args.timeout)
    tickets_s = time.monotonic() - back if done is not None else None
    created = wanted & set(creates_by_token(host))
    return {"outage_s": round(outage, 1),
            "recovery_idle_s": round(idle_s, 1) if idle_s is not None else None,
            "recovery_tickets_s": round(tickets_s, 1) if tickets_s is not None else None,
            "recovery_ticketed": len(created),
            "reconnected": ledger.events("reconnected", before_iso),
            "connection_lost": ledger.events("connection lost", before_iso),
            "recovery_failed": ledger.events("connection failed", before_iso)}
