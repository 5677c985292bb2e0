"""Helpers of the OAuth2 tests (their fixtures are in conftest: ``oauth_server``,
``oauth_dovecot``, ``fresh_token_sources``)."""

from __future__ import annotations

import threading
import time
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


def approve_when_shown(double: OAuthDouble, username: str) -> threading.Thread:
    """The person at the browser: enters the device code as ``username`` once the bridge has
    asked for one (within 20 s)."""
    def approve() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            codes = double.pending_user_codes()
            if codes:
                double.approve_device(codes[-1], username)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread
