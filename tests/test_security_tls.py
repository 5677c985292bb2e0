"""TLS (issue 12, row "verify_tls: false for a remote host; certificate failures"): unverified
TLS only for loopback or with ``insecure_tls_i_understand`` (a warning per connection), and a
certificate that does not verify is a permanent account error, not a transient retry. Real
Dovecot over IMAPS and a real HTTPS server for the helpdesk, both on loopback."""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_cli import cli_output
from dovecot import DovecotServer, MailUser
from dovecot import TestPki as Pki
from zendesk_responses import Bridge, FakeZendesk, account, customer_mail, write_config

from connector.config import config_from_mapping
from connector.errors import ConfigError, HostCertificateError
from connector.exitcodes import EX_UNAVAILABLE
from connector.fetch.base import make_ssl_context
from connector.hosts.zendesk import OAuthClientCredentials, ZendeskAdapter, ZendeskSettings
from connector.tls import certificate_failure


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, account_extra: dict[str, Any]
            | None = None, host_extra: dict[str, Any] | None = None) -> Any:
    monkeypatch.setenv("PMB_TEST_SECRET", "s3cret-s3cret-s3cret")
    data = {
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "zendesk", "url": "https://acme.zendesk.com",
                 "auth": {"type": "api_token", "email": "a@acme.example",
                          "api_token": "${PMB_TEST_SECRET}"}, **(host_extra or {})},
        "accounts": [{"name": "support", "protocol": "imap", "host": "imap.example.com",
                      "username": "support", "password": "${PMB_TEST_SECRET}",
                      **(account_extra or {})}],
    }
    return config_from_mapping(data, "config.yaml", tmp_path)


@pytest.mark.parametrize("section", ["account", "host"])
def test_verify_tls_false_for_a_remote_host_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str) -> None:
    extra = {"verify_tls": False}
    with pytest.raises(ConfigError, match="verify_tls: may be false only for a loopback") as info:
        _config(tmp_path, monkeypatch, **{f"{section}_extra": extra})
    assert "insecure_tls_i_understand" in str(info.value)


def test_verify_tls_false_is_allowed_with_the_explicit_acknowledgement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"verify_tls": False, "insecure_tls_i_understand": True}
    config = _config(tmp_path, monkeypatch, account_extra=extra, host_extra=extra)
    assert not config.accounts[0].verify_tls and config.accounts[0].insecure_tls_i_understand
    assert not config.host.verify_tls and config.host.insecure_tls_i_understand


def test_verify_tls_false_for_loopback_needs_no_acknowledgement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, monkeypatch, account_extra={"verify_tls": False,
                                                           "host": "127.0.0.1"})
    assert not config.accounts[0].verify_tls


def test_outbound_smtp_verify_tls_false_for_a_remote_host_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"outbound": {"enabled": True, "from_address": "support@example.com",
                          "smtp": {"host": "smtp.example.com", "port": 465,
                                   "verify_tls": False}}}
    with pytest.raises(ConfigError, match="smtp.verify_tls: may be false only for a loopback"):
        _config(tmp_path, monkeypatch, account_extra=extra)


def test_an_unverified_remote_connection_logs_a_warning_every_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    extra = {"verify_tls": False, "insecure_tls_i_understand": True}
    settings = _config(tmp_path, monkeypatch, account_extra=extra).accounts[0]
    with caplog.at_level(logging.WARNING, logger="connector.tls"):
        for _ in range(3):
            context = make_ssl_context(settings)
            assert context.verify_mode == ssl.CERT_NONE
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 3
    assert "imap.example.com" in warnings[0].getMessage()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_certificate_failure_disables_the_account_at_once(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, pki: Pki,
        zendesk: FakeZendesk, protocol: str) -> None:
    """Dovecot's certificate comes from a CA the account does not trust: the first pass
    disables the account with the reason (shown by ``accounts``); no second login attempt."""
    dovecot.append(mailbox_user, customer_mail("Hello", "tls-1@example.com"))
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    entry = account(dovecot, mailbox_user, "support", protocol, security="tls",
                    port=port, ca_file=str(pki.ca_file))
    config_path = write_config(tmp_path, [entry])
    bridge = Bridge(config_path)
    try:
        summary = bridge.poll()
        assert summary.error and "CERTIFICATE_VERIFY_FAILED" in summary.error
        health = bridge.store.get_health("support")
        assert not health.enabled
        assert "permanent failure" in (health.disabled_reason or "")
        assert health.consecutive_failures == 1
        again = bridge.poll()
        assert again.error == "account is disabled"
        assert bridge.store.get_health("support").consecutive_failures == 1
    finally:
        bridge.close()
    assert zendesk.tickets == {}
    code, text = cli_output("--config", str(config_path), "accounts")
    assert "not trusted" in text and "support" in text
    code, text = cli_output("--config", str(config_path), "check")
    assert code == EX_UNAVAILABLE
    assert "FAIL  account support" in text and "permanent failure" in text


# -- the helpdesk over real HTTPS ------------------------------------------------------------


class _CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def get_request(self) -> Any:
        self.connections += 1  # counted before the TLS handshake, which may fail
        return super().get_request()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b'{"user": {"id": 1, "name": "n", "email": "e@x", "role": "admin"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(pki: Pki) -> Iterator[_CountingServer]:
    server = _CountingServer(("127.0.0.1", 0), _Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _adapter(server: _CountingServer, ca_file: str | None) -> ZendeskAdapter:
    port = server.server_address[1]
    settings = ZendeskSettings(base_url=f"https://127.0.0.1:{port}",
                               auth=OAuthClientCredentials("id", "secret"), max_attempts=5,
                               ca_file=ca_file)
    return ZendeskAdapter(settings, sleep=lambda _s: None)


def test_helpdesk_certificate_failure_is_permanent_not_retried(
        https_server: _CountingServer) -> None:
    adapter = _adapter(https_server, ca_file=None)  # the system CAs do not know the test CA
    with pytest.raises(HostCertificateError, match="not trusted") as info:
        adapter.check_credentials()
    assert certificate_failure(info.value) is not None
    assert https_server.connections == 1  # max_attempts is 5: one handshake, no retries


def test_helpdesk_with_its_ca_file_is_trusted(https_server: _CountingServer,
                                              pki: Pki) -> None:
    adapter = _adapter(https_server, ca_file=str(pki.ca_file))
    adapter._token = "t"  # noqa: SLF001 (no OAuth exchange against this bare server)
    adapter._token_renew_at = float("inf")  # noqa: SLF001
    assert "admin" in adapter.check_credentials()
