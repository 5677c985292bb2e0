"""Fixtures for the OAuth2 tests: the OAuth2 server double and a Dovecot whose
``passdb oauth2`` validates tokens against it (started only by the tests that use them, so the
session's main Dovecot stays as fast as before)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dovecot import DOVECOT, DovecotServer, MailUser, TestPki
from oauth_double import OAuthDouble

from connector.auth import forget_sources
from connector.auth.settings import OAuth2Settings
from connector.config import AccountConfig


@pytest.fixture(scope="session")
def oauth_server(pki: TestPki) -> Iterator[OAuthDouble]:
    with OAuthDouble(pki) as double:
        yield double


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server: OAuthDouble) -> Iterator[DovecotServer]:
    if not os.access(DOVECOT, os.X_OK):
        pytest.fail(f"{DOVECOT} not found: run scripts/install-test-deps.sh")
    with DovecotServer(oauth2_introspection_url=oauth_server.url + "/introspect") as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_token_sources() -> Iterator[None]:
    forget_sources()
    yield
    forget_sources()


def oauth_account(server: DovecotServer, user: MailUser, oauth2: OAuth2Settings,
                  protocol: str = "imap", **overrides: Any) -> AccountConfig:
    account = server.account(user, protocol, auth="oauth2", oauth2=oauth2, **overrides)
    return replace(account, name=oauth2.account)


def generic_settings(double: OAuthDouble, user: str, tmp: Path, **values: Any) -> OAuth2Settings:
    fields: dict[str, Any] = {
        "account": f"oauth-{user}", "provider": "generic", "flow": "client_credentials",
        "username": user, "client_id": f"bridge-{user}", "client_secret": "s3cret",
        "token_url": double.url + "/token", "scopes": ("mail",),
        "token_file": tmp / "state" / "oauth2" / f"oauth-{user}.json", "timeout": 10.0}
    fields.update(values)
    return OAuth2Settings(**fields)
