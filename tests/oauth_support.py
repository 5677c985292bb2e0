"""Helpers of the OAuth2 tests (their fixtures are in conftest: ``oauth_server``,
``oauth_dovecot``, ``fresh_token_sources``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dovecot import DovecotServer, MailUser
from oauth_double import OAuthDouble

from connector.auth.settings import OAuth2Settings
from connector.config import AccountConfig


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
