"""End to end over OAuth2: ``postmaster-bridge run --once`` as a process, an app-only Microsoft
grant (msal against the Entra double), IMAP to the Dovecot whose passdb oauth2 checks the
token, the Zendesk double as the helpdesk: the mail becomes a ticket and leaves the inbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dovecot import DovecotServer
from dovecot import TestPki as Pki
from oauth_double import OAuthDouble
from zendesk_double import ZendeskDouble

REPO = Path(__file__).resolve().parents[1]
MAIL = (b"From: Mario Rossi <mario.rossi@example.org>\r\nTo: support@example.com\r\n"
        b"Subject: Printer on fire\r\nMessage-ID: <oauth-e2e-1@example.org>\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nPlease help.\r\n")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_run_once_ingests_over_oauth2(oauth_server: OAuthDouble, oauth_dovecot: DovecotServer,
                                      pki: Pki, tmp_path: Path, protocol: str) -> None:
    user = oauth_dovecot.add_user()
    oauth_dovecot.append(user, MAIL)
    app = oauth_server.add_client(secret="app-secret", app_username=user.name)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "app").write_text("app-secret\n")
    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        (secrets / "zendesk").write_text(zd.api_token)
        config = tmp_path / "bridge.yaml"
        config.write_text(yaml.safe_dump({
            "store": {"path": str(tmp_path / "ledger.sqlite3")},
            "host": {"type": "zendesk", "url": zd.url, "auth": {
                "type": "api_token", "email": zd.email,
                "api_token_file": str(secrets / "zendesk")}},
            "accounts": [{
                "name": "m365", "protocol": protocol, "host": oauth_dovecot.host,
                "port": oauth_dovecot.imap_port if protocol == "imap"
                else oauth_dovecot.pop3_port,
                "security": "none", "username": user.name, "auth": "oauth2",
                "delete_after_processing": protocol == "pop3",
                "oauth2": {"provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                           "client_id": app.client_id,
                           "client_secret_file": str(secrets / "app"),
                           "authority_host": oauth_server.tls_url,
                           "ca_file": str(pki.ca_file)}}]}))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "connector.cli", "--config", str(config),
                               "run", "--once"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "m365: fetched=1 ticketed=1" in done.stdout + done.stderr
        (ticket,) = zd.tickets()
        assert ticket["subject"] == "Printer on fire"
    assert oauth_dovecot.list_folder(user, "INBOX") == []
    if protocol == "imap":
        assert [m.raw for m in oauth_dovecot.list_folder(user, "Processed")] == [MAIL]
    assert "app-secret" not in done.stdout + done.stderr
