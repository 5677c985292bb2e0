"""The benchmark environment: the test Dovecot, a host double, a work directory, a config.

``BenchEnv`` starts a private Dovecot (``tests/dovecot.py``) and a host double (the
zero-latency ``bench/host_double.py``, or ``tests/zendesk_double.py`` for comparison), loads
mail into one user's INBOX, puts processed mail back for the next repetition, writes a bridge
config pointing at both, and reads how much CPU the servers used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "tests", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from dovecot import DovecotServer, MailUser  # noqa: E402
from host_double import HostDouble, process_cpu_seconds  # noqa: E402

from connector.fetch.imap import QuietIMAPClient  # noqa: E402

SUPPORT_ADDRESS = "support@bench.example.com"
APPEND_CHUNK_BYTES = 32 * 1024 * 1024  # per MULTIAPPEND command


def _clock_ticks(pid: int, *, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_group_cpu_seconds(pgid: int) -> float:
    """CPU of every live process in a process group, plus what its exited children used (the
    Dovecot master reaps its imap processes, so their time lands in its cutime/cstime)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += _clock_ticks(int(entry.name), children=int(entry.name) == pgid)
    return total


def descendants_cpu_seconds(root: int, exclude: set[int]) -> float:
    """CPU of every live descendant of ``root`` (children's reaped children included), except
    the subtrees of ``exclude``: the bridge's parse workers and their forkserver."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
    total = 0.0
    for pid in parents:
        node = parents.get(pid)
        chain = {pid}
        while node is not None and node not in (root, 0, 1) and node not in chain:
            chain.add(node)
            node = parents.get(node)
        if node == root and not chain & exclude:
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += _clock_ticks(pid, children=True)
    return total


@dataclass
class CpuMark:
    """CPU seconds used so far by the bridge process, Dovecot and the host double; ``workers``
    is the bridge's parse worker processes (connector.service.parsing)."""

    wall: float
    bridge: float
    dovecot: float
    host: float
    workers: float = 0.0

    def since(self, earlier: CpuMark) -> CpuMark:
        return CpuMark(self.wall - earlier.wall, self.bridge - earlier.bridge,
                       self.dovecot - earlier.dovecot, self.host - earlier.host,
                       self.workers - earlier.workers)


class BenchEnv:
    """``with BenchEnv() as env: env.load(raws); env.write_config(); ...``"""

    def __init__(self, workdir: Path | None = None, *, host: str = "bench",
                 keep: bool = False, host_latency_ms: float = 0.0,
                 host_rate_limit: int = 0) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="pmb-bench-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Dovecot's mail processes run as the dovecot user and must reach the maildirs.
        self.workdir.chmod(0o755)
        self.keep = keep
        self.host_kind = host
        self.host_latency_ms = host_latency_ms
        self.host_rate_limit = host_rate_limit
        self.dovecot = DovecotServer(self.workdir / "dovecot")
        self.user: MailUser | None = None
        self.host: Any = None
        self._runs = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> BenchEnv:
        (self.workdir / "dovecot").mkdir(exist_ok=True)
        self.dovecot.start()
        self.user = self.dovecot.add_user("bench", "bench-password")
        if self.host_kind == "bench":
            self.host = HostDouble(latency_ms=self.host_latency_ms,
                                   rate_limit=self.host_rate_limit).start()
        else:
            from zendesk_double import ZendeskDouble

            self.host = ZendeskDouble(self.workdir / "zendesk-double.json").start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.host is not None:
                self.host.stop()
        finally:
            self.dovecot.stop()
            self.dovecot.kill()
            if self._own_workdir and not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- mail ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def imap(self) -> Iterator[QuietIMAPClient]:
        assert self.user is not None
        client = QuietIMAPClient(self.dovecot.host, self.dovecot.imap_port, ssl=False, timeout=60)
        try:
            client.login(self.user.name, self.user.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def load(self, raws: Iterable[bytes], folder: str = "INBOX") -> int:
        """MULTIAPPEND the messages in order (chunks of about 32 MB); returns how many."""
        count = 0
        with self.imap() as client:
            for name in (folder, "Processed", "Error"):
                if not client.folder_exists(name):
                    client.create_folder(name)
            chunk: list[bytes] = []
            size = 0
            for raw in raws:
                chunk.append(raw)
                size += len(raw)
                if size >= APPEND_CHUNK_BYTES:
                    client.multiappend(folder, chunk)
                    count += len(chunk)
                    chunk, size = [], 0
            if chunk:
                client.multiappend(folder, chunk)
                count += len(chunk)
        return count

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.imap() as client:
            client.append(folder, raw)

    def restore(self) -> int:
        """Move everything the last run filed back into INBOX (same order); returns INBOX size."""
        with self.imap() as client:
            for name in ("Processed", "Error"):
                if client.folder_exists(name):
                    client.select_folder(name)
                    if client.search("ALL"):
                        client.move("1:*", "INBOX")
            status = client.folder_status("INBOX", [b"MESSAGES"])
        return int(status[b"MESSAGES"])

    def clear(self) -> None:
        """Delete every message in every folder."""
        with self.imap() as client:
            for name in ("INBOX", "Processed", "Error"):
                if client.folder_exists(name):
                    client.select_folder(name)
                    uids = client.search("ALL")
                    if uids:
                        client.add_flags(uids, [b"\\Deleted"], silent=True)
                        client.expunge()

    def folder_counts(self) -> dict[str, int]:
        with self.imap() as client:
            return {name: int(client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])
                    for name in ("INBOX", "Processed", "Error") if client.folder_exists(name)}

    # -- bridge config -------------------------------------------------------------------------
    def write_config(self, *, batch_size: int = 200, poll_interval: float = 5.0,
                     account_extra: str = "", name: str | None = None,
                     host_extra: str = "", top_extra: str = "",
                     store_dsn: str | None = None) -> Path:
        """A config file for this run: a fresh ledger each time (``store_dsn``: a fresh
        PostgreSQL database instead of the SQLite file), IMAP without TLS (loopback), the host
        double with an API token; ``host_extra``/``account_extra`` are YAML lines added to the
        host and the account, ``top_extra`` top-level sections."""
        assert self.user is not None
        self._runs += 1
        run_dir = self.workdir / (name or f"run{self._runs}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "imap-password").write_text(self.user.password)
        token = getattr(self.host, "api_token", "bench-token")
        email = getattr(self.host, "email", "bench@example.com")
        (run_dir / "host-token").write_text(token)
        extra = "".join(f"    {line}\n" for line in account_extra.splitlines() if line.strip())
        host_lines = "".join(f"  {line}\n" for line in host_extra.splitlines() if line.strip())
        config = run_dir / "bridge.yaml"
        store = f"store:\n  path: {run_dir / 'ledger.sqlite3'}\n"
        if store_dsn is not None:
            (run_dir / "store-dsn").write_text(store_dsn)
            store = f"store:\n  type: postgresql\n  dsn_file: {run_dir / 'store-dsn'}\n"
        config.write_text(
            store +
            f"host:\n  type: zendesk\n  url: {self.host.url}\n  timeout: 60\n"
            f"  auth:\n    type: api_token\n    email: {email}\n"
            f"    api_token_file: {run_dir / 'host-token'}\n{host_lines}"
            "accounts:\n"
            f"  - name: bench\n    protocol: imap\n    host: 127.0.0.1\n"
            f"    port: {self.dovecot.imap_port}\n    security: none\n"
            f"    username: {self.user.name}\n    password_file: {run_dir / 'imap-password'}\n"
            f"    batch_size: {batch_size}\n    poll_interval: {poll_interval}\n"
            f"    timeout: 60\n    own_addresses: [{SUPPORT_ADDRESS}]\n{extra}{top_extra}"
        )
        return config

    # -- measuring -----------------------------------------------------------------------------
    def cpu_mark(self) -> CpuMark:
        usage = os.times()
        assert self.dovecot._process is not None
        servers = {self.dovecot._process.pid, self.host.pid or -1}
        return CpuMark(time.perf_counter(), usage.user + usage.system,
                       process_group_cpu_seconds(self.dovecot._process.pid),
                       process_cpu_seconds(self.host.pid) if self.host.pid else 0.0,
                       descendants_cpu_seconds(os.getpid(), servers))

    def reset_host(self) -> None:
        self.host.reset()
