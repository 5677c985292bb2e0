"""OAuth2 logins against a real Dovecot whose ``passdb oauth2`` asks the OAuth2 double (RFC 7662
introspection) whether each token is active and whose it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from dovecot import DovecotServer, MailUser
from oauth_double import OAuthDouble
from oauth_support import generic_settings, oauth_account

from connector.errors import AuthenticationError, GrantRevokedError
from connector.fetch import open_mailbox
from connector.service.runner import AccountPoller
from connector.store.sqlite import SQLiteStore

pytestmark = pytest.mark.usefixtures("fresh_token_sources")

MESSAGE = b"From: a@example.com\r\nTo: support@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def user(oauth_dovecot: DovecotServer) -> MailUser:
    """A mailbox user; its password is only for putting mail in (PLAIN, passwd-file)."""
    return oauth_dovecot.add_user()


def _app(double: OAuthDouble, user: MailUser) -> None:
    double.add_client(f"bridge-{user.name}", secret="s3cret", app_username=user.name)


def _logins(server: DovecotServer, user: MailUser) -> list[str]:
    return [line for line in server.log_text().splitlines()
            if "Login: user=<" + user.name + ">" in line]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_login_with_a_valid_token_reads_the_mailbox(
        oauth_dovecot: DovecotServer, oauth_server: OAuthDouble, user: MailUser,
        tmp_path: Path, protocol: str, mechanism: str) -> None:
    _app(oauth_server, user)
    oauth_dovecot.append(user, MESSAGE)
    account = oauth_account(oauth_dovecot, user, generic_settings(
        oauth_server, user.name, tmp_path, mechanism=mechanism), protocol)
    with open_mailbox(account) as mailbox:
        listed = mailbox.list_new(set())
        assert [m.raw for m in mailbox.fetch(listed)] == [MESSAGE]
    assert any(f"method={mechanism.upper()}" in line for line in _logins(oauth_dovecot, user))


def test_auto_prefers_oauthbearer_when_announced(
        oauth_dovecot: DovecotServer, oauth_server: OAuthDouble, user: MailUser,
        tmp_path: Path) -> None:
    _app(oauth_server, user)
    account = oauth_account(oauth_dovecot, user, generic_settings(oauth_server, user.name,
                                                                  tmp_path))
    with open_mailbox(account) as mailbox:
        assert "OK" in mailbox.check()
    assert "method=OAUTHBEARER" in _logins(oauth_dovecot, user)[-1]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_an_expired_token_is_refreshed_and_the_login_tried_once_more(
        oauth_dovecot: DovecotServer, oauth_server: OAuthDouble, user: MailUser,
        tmp_path: Path, protocol: str) -> None:
    _app(oauth_server, user)
    account = oauth_account(oauth_dovecot, user, generic_settings(
        oauth_server, user.name, tmp_path), protocol)
    with open_mailbox(account) as mailbox:
        mailbox.check()
    issued, asked = oauth_server.requests["token"], oauth_server.introspections
    # The issuer now says the bridge's token is dead although its expiry is an hour away.
    oauth_server.expire_access_tokens(user.name)
    with open_mailbox(account) as mailbox:
        assert "OK" in mailbox.check()
    assert oauth_server.requests["token"] == issued + 1
    # Dovecot asked about the dead token (refused) and then the new one (accepted).
    assert oauth_server.introspections == asked + 2
    assert len(_logins(oauth_dovecot, user)) == 2


def test_a_token_refused_twice_is_an_authentication_error_after_one_refresh(
        oauth_dovecot: DovecotServer, oauth_server: OAuthDouble, user: MailUser,
        tmp_path: Path) -> None:
    # The app's tokens are for another mailbox: Dovecot refuses every one of them.
    oauth_server.add_client(f"bridge-{user.name}", secret="s3cret", app_username="someone-else")
    account = oauth_account(oauth_dovecot, user, generic_settings(oauth_server, user.name,
                                                                  tmp_path))
    before = oauth_server.requests["token"]
    with pytest.raises(AuthenticationError, match="with a token just issued"):
        open_mailbox(account).connect()
    assert oauth_server.requests["token"] == before + 2
    assert _logins(oauth_dovecot, user) == []


def test_a_revoked_refresh_token_disables_the_account_with_what_to_do(
        oauth_dovecot: DovecotServer, oauth_server: OAuthDouble, user: MailUser,
        tmp_path: Path) -> None:
    client = oauth_server.add_client(f"bridge-{user.name}", secret="s3cret")
    refresh = oauth_server.grant_refresh_token(user.name, client.client_id, "mail")
    settings = generic_settings(oauth_server, user.name, tmp_path, flow="refresh_token",
                                refresh_token=refresh)
    account = oauth_account(oauth_dovecot, user, settings)
    store = SQLiteStore(tmp_path / "store.sqlite3")
    poller = AccountPoller(account, store, pipeline=None)  # type: ignore[arg-type]
    with open_mailbox(account) as mailbox:
        mailbox.check()
    oauth_server.revoke_refresh_tokens(user.name)
    oauth_server.expire_access_tokens(user.name)

    summary = poller.poll()

    health = store.get_health(account.name)
    assert not health.enabled
    assert "invalid_grant" in (summary.error or "")
    assert f"postmaster-bridge accounts authorize {account.name}" in health.disabled_reason
    assert f"postmaster-bridge accounts enable {account.name}" in health.disabled_reason
    assert poller.poll().error == "account is disabled"
    with pytest.raises(GrantRevokedError):
        open_mailbox(account).connect()
