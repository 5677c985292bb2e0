"""Shared fixtures. Dovecot: one real server for the whole session, a fresh user per test;
Zendesk: the `responses` fake, and the bridge assembled around it (tests/zendesk_responses.py).
Test modules with a Zendesk fake of their own (outbound install) override ``zendesk``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dovecot import DOVECOT, DovecotServer, MailUser, TestPki, write_test_pki
from oauth_double import OAuthDouble
from zendesk_responses import Bridge, FakeZendesk, fake_zendesk, write_config

from connector.auth import forget_sources


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


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    """Zendesk behind `responses`, validated against its OpenAPI description."""
    with fake_zendesk() as fake:
        yield fake


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
