"""Shared fixtures. Dovecot: one real server for the whole session, a fresh user per test;
Zendesk: the `responses` fake, and the bridge assembled around it (tests/zendesk_responses.py).
Test modules with a Zendesk fake of their own (outbound install) override ``zendesk``.

The checkout these tests live in comes first on ``sys.path``, so a clone's tests always test
that clone's ``connector``, whatever else is installed (an editable install of another checkout,
a wheel); the tests' subprocesses get the same checkout through ``PYTHONPATH``. Shared material
that is missing (tests/shared_material.py) is named in the header and, with
``PMB_REQUIRE_SHARED=1``, stops the run before any test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))

from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from dovecot import DOVECOT, DovecotServer, MailUser, TestPki, write_test_pki  # noqa: E402
from oauth_double import OAuthDouble  # noqa: E402
from postgres import PostgresServer, required, start_server  # noqa: E402
from postgres import missing as postgres_missing  # noqa: E402
from shared_material import (  # noqa: E402
    REQUIRE_ENV,
    missing_material,
    missing_reason,
    shared_path,
    shared_required,
)
from zendesk_double import ZendeskDouble  # noqa: E402
from zendesk_oas import unchecked_summary  # noqa: E402
from zendesk_responses import Bridge, FakeZendesk, fake_zendesk, write_config  # noqa: E402

import connector  # noqa: E402
from connector.auth import forget_sources  # noqa: E402

#: A module that imports psycopg at the top cannot even be collected without it: left out
#: (the ``postgres`` fixture skips the other PostgreSQL tests), unless CI requires it.
_POSTGRES_MISSING = postgres_missing()
collect_ignore = ["test_store_postgres.py"] if (
    _POSTGRES_MISSING and "psycopg" in _POSTGRES_MISSING and not required()) else []


def pytest_configure(config: pytest.Config) -> None:
    tested = Path(connector.__file__).resolve().parents[1]
    if tested != REPO:
        raise pytest.UsageError(f"the tests in {REPO} would test the connector package of "
                                f"{tested}; run them from their own checkout")
    missing = missing_material()
    if missing and shared_required():
        raise pytest.UsageError(f"{REQUIRE_ENV}=1 and the suite "
                                + "; ".join(missing_reason(name) for name in missing))
    if _POSTGRES_MISSING and required():
        raise pytest.UsageError(f"CI or {REQUIRE_ENV}=1 and {_POSTGRES_MISSING}: the "
                                "PostgreSQL store tests need it (scripts/install-test-deps.sh)")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"connector under test: {REPO / 'connector'}"]
    reason = _POSTGRES_MISSING
    lines.append(f"postgresql: {reason}, the tests that need it are skipped" if reason else
                 "postgresql: a private server is started by the tests that need it")
    for name in ("zendesk-oas", "pec-samples"):
        path = shared_path(name)
        lines.append(f"shared/{name}: {path}" if path else
                     f"shared/{name}: missing, the tests that need it are skipped")
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summary = unchecked_summary()
    if summary:
        terminalreporter.write_line(summary, yellow=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot on 127.0.0.1 (IMAP, IMAPS, POP3, POP3S), started once per session."""
    if not os.access(DOVECOT, os.X_OK):
        pytest.fail(f"{DOVECOT} not found: run scripts/install-test-deps.sh")
    with DovecotServer() as server:
        yield server


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> MailUser:
    """A new user with an empty mailbox, so tests never see each other's mail."""
    return dovecot.add_user()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL on 127.0.0.1 (tests/postgres.py), started once per session."""
    yield from start_server()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database with the bridge's schema, for this test alone: its DSN."""
    dsn = postgres.fresh_database()
    yield dsn
    postgres.drop_database(dsn)


class StoreTarget:
    """One store database of the engine a test is parametrized with: ``store()`` and
    ``queue()`` open it (again: reopening is what a restart does); all closed after."""

    def __init__(self, engine: str, where: str) -> None:
        self.engine = engine
        self.where = where  # the SQLite file's path, or the DSN
        self.opened: list[Any] = []

    def store(self) -> Any:
        if self.engine == "sqlite":
            from connector.store.sqlite import SQLiteStore

            store: Any = SQLiteStore(self.where)
        else:
            from connector.store.postgres import PostgresStore

            store = PostgresStore(self.where, pool_size=4)
        self.opened.append(store)
        return store

    def queue(self, clock: Callable[[], float] | None = None) -> Any:
        from connector.outbound.queue import OutboundQueue

        if self.engine == "sqlite":
            queue = OutboundQueue(self.where, clock=clock)
        else:
            from connector.store.postgres import PostgresDatabase

            queue = OutboundQueue(PostgresDatabase(self.where, pool_size=4), clock=clock)
        self.opened.append(queue)
        return queue

    def close(self) -> None:
        for opened in reversed(self.opened):
            opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    """The store tests' database on each engine: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        where = str(tmp_path / "ledger.sqlite3")
    else:
        where = request.getfixturevalue("pg_dsn")
    made = StoreTarget(request.param, where)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_section(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``make_bridge(..., **store_section)``: the config's store on each engine (SQLite: the
    default ledger file; PostgreSQL: a fresh database, its DSN in a dsn_file)."""
    if request.param == "sqlite":
        return {}
    dsn_file = tmp_path / "store-dsn"
    dsn_file.write_text(request.getfixturevalue("pg_dsn"))
    return {"store": {"type": "postgresql", "dsn_file": str(dsn_file)}}


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    """Zendesk behind `responses`, validated against its OpenAPI description."""
    with fake_zendesk() as fake:
        yield fake


@pytest.fixture(scope="module")
def zd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZendeskDouble]:
    """The Zendesk double (tests/zendesk_double.py, its own process), one per test module."""
    with ZendeskDouble(tmp_path_factory.mktemp("zendesk") / "state.json") as double:
        yield double


@pytest.fixture
def zd(zd_server: ZendeskDouble) -> ZendeskDouble:
    """The module's double, emptied for this test."""
    zd_server.reset()
    return zd_server


@pytest.fixture
def make_bridge(tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    """``make_bridge(accounts, **config)``: writes the config and builds the bridge."""
    made: list[Bridge] = []

    def make(accounts: list[dict[str, Any]], **top: Any) -> Bridge:
        bridge = Bridge(write_config(tmp_path, accounts, **top))
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A test CA and a server certificate for 127.0.0.1 (the SMTP test servers use it)."""
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def oauth_server(pki: TestPki) -> Iterator[OAuthDouble]:
    """The OAuth2 server double (generic, Microsoft and Google routes; HTTP and HTTPS)."""
    with OAuthDouble(pki) as double:
        yield double


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server: OAuthDouble) -> Iterator[DovecotServer]:
    """A second Dovecot whose passdb oauth2 validates tokens with the double (started only
    by the OAuth2 tests, so the main one stays as fast as before)."""
    if not os.access(DOVECOT, os.X_OK):
        pytest.fail(f"{DOVECOT} not found: run scripts/install-test-deps.sh")
    with DovecotServer(oauth2_introspection_url=oauth_server.url + "/introspect") as server:
        yield server


@pytest.fixture
def fresh_token_sources() -> Iterator[None]:
    """No token cached from an earlier test (sources are kept per settings process-wide)."""
    forget_sources()
    yield
    forget_sources()


@pytest.fixture(autouse=True)
def no_dns_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the network: the bridge's own DKIM checks must get an injected DNS
    lookup (``load_rules(config, dnsfunc=...)``). A test that would query real DNS fails."""
    asked: list[bytes] = []

    def refuse(name: bytes, timeout: float = 5) -> bytes | None:
        asked.append(name)
        return None

    monkeypatch.setattr("connector.service.filtering.dns_txt", refuse)
    yield
    assert not asked, f"the test asked DNS for {asked}: inject a dnsfunc"
