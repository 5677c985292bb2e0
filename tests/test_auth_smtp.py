"""Replies sent with AUTH XOAUTH2 to aiosmtpd, which checks each token with the OAuth2 double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import TestPki as Pki
from oauth_double import OAuthDouble
from oauth_support import generic_settings
from smtp_server import SmtpTestServer

from connector.outbound.compose import OutgoingMessage, build_message
from connector.outbound.settings import SmtpSettings
from connector.outbound.smtp import PermanentSendError, SmtpSender

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.usefixtures("fresh_token_sources")]
FROM = "support@example.com"
TO = "customer@example.org"


@pytest.fixture(params=["tls", "starttls"])
def server(request: pytest.FixtureRequest, pki: Pki,
           oauth_server: OAuthDouble) -> Iterator[SmtpTestServer]:
    def valid(user: str, token: str) -> bool:
        answer = oauth_server.introspect(token)
        return bool(answer["active"]) and answer["username"] == user

    with SmtpTestServer(pki, mode=request.param, token_check=valid) as srv:
        yield srv


def _sender(srv: SmtpTestServer, double: OAuthDouble, tmp: Path, *, mailbox: str = FROM
            ) -> SmtpSender:
    double.add_client(f"bridge-{mailbox}", secret="s3cret", app_username=FROM)
    oauth2 = generic_settings(double, mailbox, tmp, mechanism="xoauth2")
    return SmtpSender(SmtpSettings(host=srv.host, port=srv.port, security=srv.mode,
                                   username=mailbox, password="", ca_file=str(srv.ca_file),
                                   timeout=5.0, oauth2=oauth2))


def _message() -> object:
    return build_message(OutgoingMessage(from_address=FROM, to_address=TO,
                                         subject="Re: help [#12]", text_body="Hello.\n",
                                         message_id="pmb.12.a@example.com"))


def test_reply_sent_with_xoauth2(server: SmtpTestServer, oauth_server: OAuthDouble,
                                 tmp_path: Path) -> None:
    result = _sender(server, oauth_server, tmp_path).send(_message(), sender=FROM,
                                                          recipients=[TO])
    assert result.reply.startswith("250")
    (got,) = server.received
    assert got.login == FROM and got.tls
    assert server.logins == [(FROM, True)]


def test_refused_token_is_refreshed_once(server: SmtpTestServer, oauth_server: OAuthDouble,
                                         tmp_path: Path) -> None:
    sender = _sender(server, oauth_server, tmp_path)
    sender.send(_message(), sender=FROM, recipients=[TO])
    oauth_server.expire_access_tokens(FROM)
    sender.send(_message(), sender=FROM, recipients=[TO])
    assert server.logins == [(FROM, True), (FROM, False), (FROM, True)]
    assert len(server.received) == 2


def test_token_for_another_mailbox_is_a_permanent_failure(
        server: SmtpTestServer, oauth_server: OAuthDouble, tmp_path: Path) -> None:
    sender = _sender(server, oauth_server, tmp_path, mailbox="other@example.com")
    with pytest.raises(PermanentSendError, match="535"):
        sender.send(_message(), sender=FROM, recipients=[TO])
    assert server.logins == [("other@example.com", False)] * 2
    assert server.received == []
