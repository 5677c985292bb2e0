"""Replies through Microsoft Graph ``sendMail`` (``outbound: {transport: graph}``), for tenants
where SMTP AUTH is switched off.

The composed message goes as MIME ("Send Outlook messages in MIME format": the base64 of the
message as the body, ``Content-Type: text/plain``), so headers the bridge sets (Message-ID,
In-Reply-To, References) reach the customer as they would over SMTP. Graph answers 202: it
accepted the message for delivery; the copy lands in Sent Items.

Outcomes as ``SmtpSender``'s: 4xx other than throttling is permanent; throttling and 5xx,
and a connection that failed before the request went out, are temporary; a request whose
answer never came is uncertain (Graph may have accepted it).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage

import requests

from connector.errors import AuthenticationError, FetchError, GrantRevokedError, TokenError
from connector.graph.client import GraphClient, GraphError
from connector.outbound.settings import SmtpSettings
from connector.outbound.smtp import (
    PermanentSendError,
    SendResult,
    TemporarySendError,
    UncertainSendError,
)


class GraphSender:
    def __init__(self, settings: SmtpSettings, *, client: GraphClient | None = None) -> None:
        if settings.oauth2 is None:
            raise ValueError("a Graph sender needs the account's OAuth2 settings")
        self.settings = settings
        scheme = "https" if settings.security != "none" else "http"
        port = "" if settings.port in (443, 80) else f":{settings.port}"
        self.client = client or GraphClient(
            base_url=f"{scheme}://{settings.host}{port}/v1.0", mailbox=settings.username,
            oauth2=settings.oauth2, ca_file=settings.ca_file, timeout=settings.timeout,
            account=settings.oauth2.account, verify_tls=settings.verify_tls)

    def describe(self) -> str:
        return f"Microsoft Graph sendMail as {self.settings.username}"

    def send(self, message: EmailMessage, *, sender: str, recipients: Sequence[str]) -> SendResult:
        # Graph takes the recipients from the MIME headers (To/Cc/Bcc); the envelope the
        # worker computed is the same list, built into those headers by compose.
        mime = base64.b64encode(message.as_bytes(policy=policy.SMTP))
        try:
            response = self.client.request("POST", "/sendMail", data=mime,
                                           headers={"Content-Type": "text/plain"})
        except GrantRevokedError as exc:
            raise PermanentSendError(f"no OAuth2 token: {exc}") from exc
        except TokenError as exc:
            raise TemporarySendError(f"no OAuth2 token: {exc}") from exc
        except GraphError as exc:
            if exc.status in (429, 503, 504) or exc.status >= 500:
                raise TemporarySendError(str(exc), code=exc.status) from exc
            raise PermanentSendError(str(exc), code=exc.status) from exc
        except AuthenticationError as exc:
            raise PermanentSendError(str(exc)) from exc
        except FetchError as exc:
            if isinstance(exc.__cause__, (requests.ConnectionError, requests.ConnectTimeout)) \
                    and not isinstance(exc.__cause__, requests.ReadTimeout):
                raise TemporarySendError(str(exc)) from exc
            raise UncertainSendError(f"sendMail sent, no answer: {exc}") from exc
        return SendResult(f"{response.status_code} {response.reason} (Graph sendMail)")
