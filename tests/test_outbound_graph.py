"""Replies through Microsoft Graph sendMail (``outbound.transport: graph``) to the Graph double."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml
from graph_double import GraphDouble
from oauth_double import OAuthDouble
from oauth_support import generic_settings

from connector.config import load_config
from connector.outbound.compose import OutgoingMessage, build_message
from connector.outbound.graph import GraphSender
from connector.outbound.settings import SmtpSettings, load_outbound
from connector.outbound.smtp import PermanentSendError, TemporarySendError
from connector.outbound.worker import make_sender

pytestmark = pytest.mark.usefixtures("fresh_token_sources")
MAILBOX = "support@contoso.com"
TO = "customer@example.org"


@pytest.fixture
def graph(oauth_server: OAuthDouble) -> Iterator[GraphDouble]:
    with GraphDouble(oauth_server, MAILBOX) as double:
        yield double


def sender(graph: GraphDouble, oauth: OAuthDouble, tmp: Path, *,
           scopes: tuple[str, ...] = ("https://graph.microsoft.com/.default",)) -> GraphSender:
    oauth.add_client(f"bridge-{MAILBOX}", secret="s3cret", app_username="")
    oauth2 = generic_settings(oauth, MAILBOX, tmp, scopes=scopes)
    return GraphSender(SmtpSettings(host="127.0.0.1", port=graph.port, security="none",
                                    username=MAILBOX, password="", timeout=5.0, oauth2=oauth2))


def message() -> object:
    return build_message(OutgoingMessage(
        from_address=MAILBOX, to_address=TO, subject="Re: printer [#31]", text_body="Fixed.\n",
        message_id="pmb.31.a@contoso.com", in_reply_to="c1@example.org",
        references=("c1@example.org",)))


def test_reply_goes_out_as_mime_with_our_headers(graph: GraphDouble, oauth_server: OAuthDouble,
                                                 tmp_path: Path) -> None:
    result = sender(graph, oauth_server, tmp_path).send(message(), sender=MAILBOX,
                                                        recipients=[TO])
    assert result.reply.startswith("202")
    (raw,) = graph.sent
    sent = message_from_bytes(raw, policy=policy.default)
    assert sent["Message-ID"] == "<pmb.31.a@contoso.com>"
    assert sent["In-Reply-To"] == "<c1@example.org>"
    assert sent["To"] == TO and sent["Subject"] == "Re: printer [#31]"


def test_long_throttling_is_temporary(graph: GraphDouble, oauth_server: OAuthDouble,
                                      tmp_path: Path) -> None:
    graph.throttle(1, retry_after=3600)
    with pytest.raises(TemporarySendError, match="retry after 3600"):
        sender(graph, oauth_server, tmp_path).send(message(), sender=MAILBOX, recipients=[TO])
    assert graph.sent == []


def test_missing_permission_is_permanent_and_says_which(graph: GraphDouble,
                                                        oauth_server: OAuthDouble,
                                                        tmp_path: Path) -> None:
    # A token without Graph in its audience (an Exchange IMAP token): Graph refuses it.
    with pytest.raises(PermanentSendError, match="Mail.Send"):
        sender(graph, oauth_server, tmp_path, scopes=("imap",)).send(
            message(), sender=MAILBOX, recipients=[TO])


def test_transport_graph_in_the_config_picks_the_graph_sender(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "signing").write_text("a-webhook-signing-secret\n")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "host": {"type": "dry-run"},
        "service": {"public_url": "https://bridge.example.com",
                    "signing_secret_file": str(tmp_path / "signing")},
        "accounts": [{
            "name": "support", "provider": "microsoft365", "protocol": "imap",
            "username": MAILBOX,
            "oauth2": {"tenant": "contoso.onmicrosoft.com", "client_id": "app",
                       "client_secret_file": str(tmp_path / "secret")},
            "outbound": {"transport": "graph"}}]}))
    config = load_config(path)
    (settings,) = load_outbound(config).accounts
    assert settings.transport == "graph"
    assert (settings.smtp.host, settings.smtp.port) == ("graph.microsoft.com", 443)
    assert settings.smtp.oauth2 is not None
    assert settings.smtp.oauth2.scopes == ("https://graph.microsoft.com/.default",)
    assert isinstance(make_sender(settings), GraphSender)
