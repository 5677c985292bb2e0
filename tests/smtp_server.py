"""A real SMTP submission server for the outbound tests: aiosmtpd on 127.0.0.1 with TLS.

``SmtpTestServer(pki, mode="tls")`` listens with implicit TLS (like a PEC provider's 465),
``mode="starttls"`` offers and requires STARTTLS (587), ``mode="plain"`` offers no TLS at all
(to prove the client refuses it). Logins are checked against ``username``/``password`` and
only accepted over TLS. Every accepted message is kept in ``received`` with its envelope and
whether it arrived over TLS.

Answers can be scripted per transaction: ``fail_next("451 4.3.0 Try again later")`` makes
the next DATA (or ``stage="rcpt"``: RCPT) answer that; ``fail_next("drop")`` closes the
connection after the message's final dot without answering (the "did it go?" case).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from dovecot import TestPki, free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    login: str | None

    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.server._scripted("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.server._scripted("data")
        if reply == "drop":
            server.transport.close()
            return "250 2.0.0 never seen by the client"
        if reply is not None:
            return reply
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.server.received.append(ReceivedMessage(
            mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            tls=server.transport.get_extra_info("ssl_object") is not None, login=login))
        self.server.delivered.set()
        return f"250 2.0.0 Ok: queued as Q{len(self.server.received)}"


class _OAuthHandler(_Handler):
    """Also offers AUTH XOAUTH2 (Google's and Exchange Online's SASL mechanism): the bearer
    token is checked by ``server.token_check(user, token)``. A refused token gets the
    mechanism's error challenge (334 + base64 JSON status), then 535 after the client's empty
    response, as Gmail and Exchange answer."""

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) > 1:
            raw = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth("")
            raw = answer if isinstance(answer, bytes) else b""
        fields = dict(part.split("=", 1) for part in raw.decode().split("\x01") if "=" in part)
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        check = self.server.token_check
        ok = check is not None and check(user, token)
        self.server.logins.append((user, ok))
        if not ok:
            status = json.dumps({"status": "401", "schemes": "bearer",
                                 "scope": "https://mail.google.com/"})
            await server.challenge_auth(status.encode())
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, handled=False,
                          auth_data=LoginPassword(user.encode(), b""))


class SmtpTestServer:
    def __init__(self, pki: TestPki, *, mode: str = "tls", username: str = "pec@pec.example.it",
                 password: str = "app-password-123",
                 token_check: Callable[[str, str], bool] | None = None) -> None:
        self.pki = pki
        self.mode = mode
        self.username = username
        self.password = password
        self.port = free_port()
        self.token_check = token_check
        self.host = HOST
        self.received: list[ReceivedMessage] = []
        self.delivered = threading.Event()
        self.logins: list[tuple[str, bool]] = []
        self._script: dict[str, deque[str]] = {"rcpt": deque(), "data": deque()}
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    def fail_next(self, reply: str, *, stage: str = "data", times: int = 1) -> None:
        with self._lock:
            self._script[stage].extend([reply] * times)

    def _scripted(self, stage: str) -> str | None:
        with self._lock:
            return self._script[stage].popleft() if self._script[stage] else None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == self.username and \
            auth_data.password.decode() == self.password
        self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword)
                            else "?", ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.pki.cert_file), str(self.pki.key_file))
        return context

    def start(self) -> SmtpTestServer:
        params: dict[str, Any] = {"authenticator": self._authenticate, "auth_require_tls": True}
        handler = _OAuthHandler(self) if self.token_check is not None else _Handler(self)
        if self.mode == "tls":
            # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS from the
            # first byte, so AUTH is offered right away.
            controller = Controller(handler, hostname=HOST, port=self.port,
                                    ssl_context=self._server_context(),
                                    authenticator=self._authenticate, auth_require_tls=False)
        elif self.mode == "starttls":
            controller = Controller(handler, hostname=HOST, port=self.port,
                                    tls_context=self._server_context(), require_starttls=True,
                                    **params)
        else:
            controller = Controller(handler, hostname=HOST, port=self.port,
                                    auth_require_tls=False, authenticator=self._authenticate)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
