"""Submit one message to the PEC provider over SMTP with TLS, and say exactly how it went.

Implicit TLS (``security: tls``, port 465) or STARTTLS (``starttls``, 587); certificates and
host names are verified (against ``ca_file`` when set), TLS 1.2 at least, and a server that
does not offer STARTTLS is refused rather than sent the password in clear.

The outcome is one of three, because retrying depends on it:

- :class:`TemporarySendError`: a 4xx answer, or the connection failed before the message's
  final dot left: nothing was accepted, send again later.
- :class:`PermanentSendError`: a 5xx answer (or a TLS/authentication problem a retry cannot
  fix): do not retry.
- :class:`UncertainSendError`: the final dot was sent but no answer came: the provider may
  have accepted it. Sending again could deliver a second certified message.

The DATA phase is run by hand (not ``smtplib.sendmail``) to know which side of the final dot a
lost connection fell on.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Any

from connector.hosts.retry import SlidingWindowLimiter
from connector.outbound.settings import SmtpSettings
from connector.tls import client_context

log = logging.getLogger(__name__)

_LEADING_DOT = re.compile(rb"(?m)^\.")


class SendError(Exception):
    """Sending failed. ``code`` is the SMTP reply code when the server gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class TemporarySendError(SendError):
    """Nothing was accepted; worth trying again later."""


class PermanentSendError(SendError):
    """The provider refused for good (5xx), or the setup is wrong."""


class UncertainSendError(SendError):
    """The message was transmitted but not confirmed: it may or may not have been accepted."""


@dataclass(frozen=True)
class SendResult:
    reply: str  # the provider's answer to the end of DATA, e.g. "250 2.0.0 Ok: queued as X"


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}".strip()


def _by_code(stage: str, code: int, message: bytes | str) -> SendError:
    text = f"{stage}: {_reply_text(code, message)}"
    if 400 <= code < 500:
        return TemporarySendError(text, code=code)
    return PermanentSendError(text, code=code)


def make_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    return client_context(host=settings.host, ca_file=settings.ca_file,
                          verify_tls=settings.verify_tls, who=f"smtp {settings.username}")


def dot_stuffed(data: bytes) -> bytes:
    """DATA payload: CRLF line ends, leading dots doubled, terminated by CRLF.CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpSender:
    """Sends through one account's submission server. One connection per message."""

    def __init__(self, settings: SmtpSettings, *, local_hostname: str | None = None) -> None:
        self.settings = settings
        self._local_hostname = local_hostname

    def describe(self) -> str:
        s = self.settings
        return f"{s.username}@{s.host}:{s.port} ({s.security})"

    def check(self) -> str:
        """Connect, verify TLS and log in as a send would, then leave (``postmaster-bridge
        check``). Raises PermanentSendError or TemporarySendError like ``send``."""
        conn = self._connect()
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
        return f"login ok as {self.describe()}"

    def send(self, message: EmailMessage, *, sender: str, recipients: Sequence[str]) -> SendResult:
        conn = self._connect()
        try:
            return self._transaction(conn, message, sender, recipients)
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = make_tls_context(s)
        where = f"{s.host}:{s.port}"
        try:
            if s.security == "tls":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=context,
                    local_hostname=self._local_hostname)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout,
                                    local_hostname=self._local_hostname)
                conn.ehlo()
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise PermanentSendError(f"{where} does not offer STARTTLS; refusing to "
                                             "log in without TLS")
                conn.starttls(context=context)
                conn.ehlo()
            self._login(conn)
            return conn
        except ssl.SSLCertVerificationError as exc:
            raise PermanentSendError(f"{where}: TLS certificate not trusted: "
                                     f"{exc.verify_message or exc}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise _by_code(f"login to {where} as {s.username}", exc.smtp_code,
                           exc.smtp_error) from exc
        except smtplib.SMTPResponseException as exc:
            raise _by_code(f"connect to {where}", exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentSendError(f"{where}: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporarySendError(f"cannot connect to {where}: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def _login(self, conn: smtplib.SMTP) -> None:
        """AUTH with the password, or XOAUTH2/OAUTHBEARER with the account's token (a new
        token and one more try when refused)."""
        s = self.settings
        if s.oauth2 is None:
            if s.username:
                conn.login(s.username, s.password)
            return
        from connector.auth import sasl
        from connector.auth.login import login_with_token
        from connector.errors import AuthenticationError, GrantRevokedError, TokenError

        conn.ehlo_or_helo_if_needed()
        announced = (conn.esmtp_features.get("auth") or "").upper().split()
        where = f"{s.host}:{s.port}"
        try:
            mechanism = sasl.choose_mechanism(announced, s.oauth2.mechanism, where)
        except AuthenticationError as exc:
            raise PermanentSendError(str(exc)) from None

        def attempt(token: Any) -> None:
            response = sasl.initial_response(mechanism, s.username, token.value, s.host, s.port)
            answers = iter((response,))

            def respond(challenge: bytes | None = None) -> str:
                return next(answers, sasl.ABORT_RESPONSE[mechanism]).decode()

            try:
                conn.auth(mechanism, respond, initial_response_ok=True)
            except smtplib.SMTPAuthenticationError as exc:
                raise AuthenticationError(
                    f"{mechanism} login as {s.username}: "
                    f"{_reply_text(exc.smtp_code, exc.smtp_error)}") from None

        try:
            login_with_token(s.oauth2, attempt, where)
        except GrantRevokedError as exc:
            raise PermanentSendError(f"no OAuth2 token: {exc}") from exc
        except TokenError as exc:
            raise TemporarySendError(f"no OAuth2 token: {exc}") from exc
        except AuthenticationError as exc:
            raise PermanentSendError(f"{where}: {exc}") from exc

    def _transaction(self, conn: smtplib.SMTP, message: EmailMessage, sender: str,
                     recipients: Sequence[str]) -> SendResult:
        payload = dot_stuffed(message.as_bytes(policy=policy.SMTP))
        dot_sent = False
        try:
            code, text = conn.mail(sender)
            if code != 250:
                raise _by_code(f"MAIL FROM:<{sender}>", code, text)
            for rcpt in recipients:
                code, text = conn.rcpt(rcpt)
                if code not in (250, 251):
                    raise _by_code(f"RCPT TO:<{rcpt}>", code, text)
            conn.putcmd("data")
            code, text = conn.getreply()
            if code != 354:
                raise _by_code("DATA", code, text)
            conn.send(payload)
            dot_sent = True
            code, text = conn.getreply()
        except SendError:
            self._reset(conn)
            raise
        except smtplib.SMTPResponseException as exc:  # an OSError too: it must come first
            raise _by_code("SMTP", exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:  # timeouts too
            if dot_sent:
                raise UncertainSendError(
                    "the connection was lost after the message was transmitted, before the "
                    f"provider confirmed it: {type(exc).__name__}: {exc}") from exc
            raise TemporarySendError(f"connection lost while sending: {type(exc).__name__}: "
                                     f"{exc}") from exc
        if code != 250:
            raise _by_code("end of DATA", code, text)
        return SendResult(_reply_text(code, text))

    @staticmethod
    def _reset(conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            pass


class SendRateLimiter:
    """Each account's provider limit (messages per minute); accounts without one are free."""

    def __init__(self, limits: dict[str, int | None], *, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self._limiters = {
            account: SlidingWindowLimiter(limit, 60.0, clock=clock, sleep=sleep)
            for account, limit in limits.items() if limit
        }

    def wait_needed(self, account: str) -> float:
        limiter = self._limiters.get(account)
        return limiter.wait_needed(account) if limiter else 0.0

    def ready(self, account: str) -> bool:
        return self.wait_needed(account) <= 0.0

    def take(self, account: str) -> None:
        """Count one SMTP transaction (waits if the window is full, which ``ready`` avoids)."""
        limiter = self._limiters.get(account)
        if limiter:
            limiter.acquire(account)
