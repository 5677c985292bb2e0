"""A private PostgreSQL server for the tests (Debian's ``postgresql`` package).

``initdb`` into a temporary directory, ``pg_ctl`` starts it on a free loopback port with its
unix socket in that directory, fsync off (test speed only: the durability of the ledger's
commits is proven on SQLite at the system-call level, and PostgreSQL's own fsync is its
business), torn down after. One server per test session; each test gets a fresh database,
copied from a template (``CREATE DATABASE ... TEMPLATE``), empty or with the bridge's schema
migrated. Tests connect over TCP with a password, as a bridge would.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` system user (made by the Debian package) through ``setpriv``.

A machine without PostgreSQL skips the tests that need it with one reason; under ``CI`` or
``PMB_REQUIRE_SHARED=1`` that is a failure instead (scripts/install-test-deps.sh installs it).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where Debian's postgresql-NN puts the server programs (the newest version found wins).
BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
PASSWORD = "pmb-test-secret"
USER = "pmb"
TEMPLATE_EMPTY = "pmb_empty"
TEMPLATE_MIGRATED = "pmb_migrated"


def postgres_bindir() -> Path | None:
    override = os.environ.get("PMB_PG_BINDIR")  # another installation (or none: a bad path)
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    for bindir in reversed(BINDIRS):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("PMB_REQUIRE_SHARED") == "1"


def skip_or_fail(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (CI or PMB_REQUIRE_SHARED=1: PostgreSQL is required; "
                    "run scripts/install-test-deps.sh)", pytrace=False)
    pytest.skip(reason)


def missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if postgres_bindir() is None:
        return "PostgreSQL (initdb, pg_ctl) is not installed"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg/psycopg-pool are not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throwaway cluster: ``dsn(dbname)`` for the bridge, ``fresh_database()`` per test."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """``durable=True`` keeps PostgreSQL's own defaults (fsync on, the WAL writer's
        pace): for measuring (bench/), where the commit's flush is the cost."""
        self.bindir = bindir
        self.durable = durable
        self.base = Path(tempfile.mkdtemp(prefix="pmb-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as_user = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}",
                             "--init-groups", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_user, *argv], check=True, capture_output=True, cwd=self.base,
                       env={**os.environ, "LC_ALL": "C.UTF-8"}, timeout=120)

    def start(self) -> None:
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            shutil.chown(pwfile, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                  f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = [f"-c port={self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories={self.base}", "-c max_connections=300"]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off", "-c shared_buffers=32MB",
                        # Unsynced commits stay unflushed until a synchronous one or the
                        # barrier flushes them (the WAL writer would otherwise do it within
                        # 0.2 s): the durability test can see the difference.
                        "-c wal_writer_delay=10000"]
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.base / "server.log"), "-w", "-t", "60", "-o", " ".join(options),
                  "start")
        self.admin_sql(f"CREATE DATABASE {TEMPLATE_EMPTY} TEMPLATE template0")
        self.admin_sql(f"CREATE DATABASE {TEMPLATE_MIGRATED} TEMPLATE template0")
        from connector.store.postgres import PostgresDatabase

        PostgresDatabase(self.dsn(TEMPLATE_MIGRATED)).close()

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str, *, password: str = PASSWORD) -> str:
        return (f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"
                "?connect_timeout=10")

    def admin_sql(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser over the unix socket (autocommit)."""
        import psycopg

        with psycopg.connect(host=str(self.base), port=self.port, user=USER, dbname=dbname,
                             autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def fresh_database(self, *, migrated: bool = True) -> str:
        """A new database of its own for one test: its DSN."""
        name = f"pmb_test_{os.getpid()}_{next(self._names)}"
        template = TEMPLATE_MIGRATED if migrated else TEMPLATE_EMPTY
        self.admin_sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1].split("?")[0]
        self.admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def log_text(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_server() -> Iterator[PostgresServer]:
    """The session's server (for a ``scope="session"`` fixture), or skip/fail naming why."""
    reason = missing()
    if reason is not None:
        skip_or_fail(f"{reason}: the PostgreSQL store tests are skipped")
    server = PostgresServer(postgres_bindir())  # type: ignore[arg-type]
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(server.base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-2000:]}"
                    f"\n{server.log_text()[-2000:]}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
