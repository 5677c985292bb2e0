"""``accounts authorize`` (device code end to end against the Entra double) and what ``check``
says about the token; the refresh token lives only in the state directory."""

from __future__ import annotations

import io
import stat
import threading
from pathlib import Path

import pytest
import requests
import yaml
from bridge_cli import cli_output, run_cli
from dovecot import DovecotServer
from dovecot import TestPki as Pki
from oauth_double import OAuthDouble
from oauth_support import approve_when_shown

from connector.auth import make_provider
from connector.auth.authorize import authorize
from connector.auth.settings import OAuth2Settings

pytestmark = pytest.mark.usefixtures("fresh_token_sources")


def _config(tmp: Path, double: OAuthDouble, server: DovecotServer, pki: Pki,
            client_id: str) -> Path:
    data = {
        "store": {"path": str(tmp / "ledger.sqlite3"), "state_dir": str(tmp / "state")},
        "host": {"type": "dry-run"},
        "accounts": [{
            "name": "m365", "protocol": "imap", "host": server.host, "port": server.imap_port,
            "security": "none", "username": "supportdesk", "auth": "oauth2",
            "oauth2": {"provider": "microsoft", "flow": "device_code",
                       "tenant": "contoso.onmicrosoft.com", "client_id": client_id,
                       "authority_host": double.tls_url, "ca_file": str(pki.ca_file)}}]}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_authorize_then_check_shows_identity_scopes_and_expiry(
        tmp_path: Path, oauth_server: OAuthDouble, oauth_dovecot: DovecotServer, pki: Pki,
        capfd: pytest.CaptureFixture[str]) -> None:
    app = oauth_server.add_client()
    config = _config(tmp_path, oauth_server, oauth_dovecot, pki, app.client_id)
    code, listing = run_cli("accounts", "-c", str(config))
    assert "nobody signed in yet: 'postmaster-bridge accounts authorize m365'" in \
        "\n".join(listing)

    approve_when_shown(oauth_server, "supportdesk")
    code, out = run_cli("accounts", "authorize", "m365", "-c", str(config))
    assert code == 0, out
    assert "https://microsoft.com/devicelogin" in out[0] and "enter the code" in out[0]
    assert any(line.startswith("ok    m365: signed in; token for supportdesk") for line in out)

    token_file = tmp_path / "state" / "oauth2" / "m365.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    refresh_tokens = [rt for rt, grant in oauth_server.refresh.items()
                      if grant.username == "supportdesk" and not grant.revoked]
    assert refresh_tokens and refresh_tokens[0] in token_file.read_text()

    code, listing = run_cli("accounts", "-c", str(config))
    assert code == 0 and "    oauth2: microsoft device_code; signed in" in listing

    code, text = cli_output("-v", "check", "-c", str(config))
    assert code == 0, text
    oauth_line = next(line for line in text.splitlines() if line.startswith("ok    oauth2 m365"))
    assert "delegated (supportdesk)" in oauth_line and "token for supportdesk" in oauth_line
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in oauth_line
    assert "expires 20" in oauth_line and "(in 60 min)" in oauth_line

    # The refresh token never appears in the config, the output or the logs (-v: DEBUG).
    current = [rt for rt, grant in oauth_server.refresh.items()
               if grant.username == "supportdesk" and not grant.revoked]
    captured = capfd.readouterr()
    for rt in refresh_tokens + current:
        assert rt not in config.read_text()
        assert rt not in text and rt not in "\n".join(out)
        assert rt not in captured.err and rt not in captured.out
    # Nor do access tokens (the SASL exchange is not traced even at -v).
    access = [t.value for t in oauth_server.tokens.values() if t.username == "supportdesk"]
    assert access
    for value in access:
        assert value not in text and value not in captured.err


def test_authorize_refuses_an_app_only_account(tmp_path: Path, oauth_server: OAuthDouble,
                                               oauth_dovecot: DovecotServer, pki: Pki) -> None:
    config = _config(tmp_path, oauth_server, oauth_dovecot, pki, "app")
    data = yaml.safe_load(config.read_text())
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    data["accounts"][0]["oauth2"].update(flow="client_credentials", client_secret_file=str(secret))
    config.write_text(yaml.safe_dump(data))
    code, text = cli_output("accounts", "authorize", "m365", "-c", str(config))
    assert code == 78


class _Screen(io.StringIO):
    """What the person at the terminal sees; tells when a URL was printed."""

    def __init__(self) -> None:
        super().__init__()
        self.url = threading.Event()

    def write(self, text: str) -> int:
        if "https://" in text:
            self.url.set()
        return super().write(text)


def test_google_installed_app_signs_in_through_the_browser(
        tmp_path: Path, oauth_server: OAuthDouble, pki: Pki) -> None:
    client = oauth_server.add_client("77-x.apps.googleusercontent.com", secret="GOCSPX-y")
    settings = OAuth2Settings(
        account="gw", provider="google", flow="refresh_token", username="support@example.com",
        client_id=client.client_id, client_secret="GOCSPX-y",
        token_url=oauth_server.tls_url + "/google/token",
        authorization_url=oauth_server.tls_url + "/google/auth",
        scopes=("https://mail.google.com/",), ca_file=str(pki.ca_file),
        token_file=tmp_path / "state" / "oauth2" / "gw.json", timeout=10.0)
    screen = _Screen()
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(authorize(settings, screen)))
    worker.start()
    assert screen.url.wait(10)
    url = next(line for line in screen.getvalue().splitlines() if line.startswith("https://"))
    assert "code_challenge_method=S256" in url and "access_type=offline" in url
    # The browser: Google's page, then the redirect back to the bridge's loopback port.
    page = requests.get(url, verify=str(pki.ca_file), timeout=10)
    assert page.status_code == 200 and "Signed in" in page.text
    worker.join(10)
    assert done, screen.getvalue()
    assert "ok    gw: signed in; token for support@example.com" in screen.getvalue()
    assert settings.token_file is not None
    assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
    # The stored refresh token now gets tokens without anybody.
    assert make_provider(settings).fetch_token().value.startswith("ya29.")
