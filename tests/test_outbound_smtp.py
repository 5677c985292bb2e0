"""SMTP submission against a real aiosmtpd server on 127.0.0.1 with TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import TestPki as Pki
from dovecot import write_test_pki
from smtp_server import SmtpTestServer

from connector.outbound.compose import OutgoingMessage, build_message
from connector.outbound.settings import SmtpSettings
from connector.outbound.smtp import (
    PermanentSendError,
    SendRateLimiter,
    SmtpSender,
    TemporarySendError,
    UncertainSendError,
    dot_stuffed,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FROM = "pec@pec.example.it"
TO = "mario.rossi@pec.example.it"


@pytest.fixture(params=["tls", "starttls"])
def server(request: pytest.FixtureRequest, pki: Pki) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pki, mode=request.param) as srv:
        yield srv


def settings(srv: SmtpTestServer, **kw: object) -> SmtpSettings:
    values: dict[str, object] = dict(host=srv.host, port=srv.port, security=srv.mode
                                     if srv.mode != "plain" else "starttls",
                                     username=srv.username, password=srv.password,
                                     ca_file=str(srv.ca_file), timeout=5.0)
    values.update(kw)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def message(body: str = "Buongiorno.\n.\n.riga con punto\n") -> object:
    return build_message(OutgoingMessage(
        from_address=FROM, to_address=TO, subject="Risposta [#4711]", text_body=body,
        message_id="pmb.1.a@pec.example.it"))


def test_sends_over_tls_with_login(server: SmtpTestServer) -> None:
    result = SmtpSender(settings(server)).send(message(), sender=FROM, recipients=[TO])
    assert result.reply.startswith("250 2.0.0 Ok: queued as Q1")
    (got,) = server.received
    assert got.tls and got.login == server.username
    assert got.mail_from == FROM and got.rcpt_tos == (TO,)
    parsed = got.message()
    assert parsed["Message-ID"] == "<pmb.1.a@pec.example.it>"
    # Dot-stuffing round trip: lines made of or starting with "." arrive unchanged.
    assert parsed.get_content().replace("\r\n", "\n") == "Buongiorno.\n.\n.riga con punto\n"


def test_temporary_and_permanent_answers(server: SmtpTestServer) -> None:
    sender = SmtpSender(settings(server))
    server.fail_next("451 4.3.0 Try again later")
    with pytest.raises(TemporarySendError) as temp:
        sender.send(message(), sender=FROM, recipients=[TO])
    assert temp.value.code == 451 and "Try again later" in str(temp.value)
    server.fail_next("550 5.7.1 blocked \"Class Of Service\" - Too much traffic from this sender")
    with pytest.raises(PermanentSendError) as perm:
        sender.send(message(), sender=FROM, recipients=[TO])
    assert perm.value.code == 550 and "Too much traffic" in str(perm.value)
    server.fail_next("553 5.1.3 bad recipient", stage="rcpt")
    with pytest.raises(PermanentSendError, match="RCPT TO"):
        sender.send(message(), sender=FROM, recipients=[TO])
    assert server.received == []
    sender.send(message(), sender=FROM, recipients=[TO])
    assert len(server.received) == 1


def test_wrong_password_is_permanent(server: SmtpTestServer) -> None:
    with pytest.raises(PermanentSendError, match="login") as info:
        SmtpSender(settings(server, password="wrong")).send(message(), sender=FROM,
                                                            recipients=[TO])
    assert info.value.code == 535
    assert server.logins[-1] == (server.username, False)


def test_untrusted_certificate_is_refused(server: SmtpTestServer, tmp_path: Path) -> None:
    other = write_test_pki(tmp_path / "other", common_name="someone else")
    with pytest.raises(PermanentSendError, match="certificate not trusted"):
        SmtpSender(settings(server, ca_file=str(other.ca_file))).send(
            message(), sender=FROM, recipients=[TO])
    assert server.received == []


def test_connection_lost_after_the_final_dot_is_uncertain(pki: Pki) -> None:
    with SmtpTestServer(pki, mode="tls") as srv:
        srv.fail_next("drop")
        with pytest.raises(UncertainSendError, match="before the provider confirmed"):
            SmtpSender(settings(srv)).send(message(), sender=FROM, recipients=[TO])


def test_nothing_listening_is_temporary(pki: Pki) -> None:
    srv = SmtpTestServer(pki)  # not started: its port is free
    with pytest.raises(TemporarySendError, match="cannot connect"):
        SmtpSender(settings(srv, timeout=2.0)).send(message(), sender=FROM, recipients=[TO])


def test_server_without_starttls_gets_no_password(pki: Pki) -> None:
    with SmtpTestServer(pki, mode="plain") as srv:
        with pytest.raises(PermanentSendError, match="does not offer STARTTLS"):
            SmtpSender(settings(srv, security="starttls")).send(message(), sender=FROM,
                                                                recipients=[TO])
        assert srv.logins == [] and srv.received == []


def test_dot_stuffing() -> None:
    assert dot_stuffed(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"


def test_rate_limiter_counts_per_account() -> None:
    now = [1000.0]
    limiter = SendRateLimiter({"legal": 2, "aruba": None}, clock=lambda: now[0],
                              sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert limiter.ready("legal")
    limiter.take("legal")
    limiter.take("legal")
    assert not limiter.ready("legal") and 59.0 < limiter.wait_needed("legal") <= 60.0
    assert limiter.ready("aruba") and limiter.wait_needed("unknown") == 0.0
    now[0] += 60.0
    assert limiter.ready("legal")


def test_check_logs_in_and_leaves(server: SmtpTestServer) -> None:
    assert SmtpSender(settings(server)).check().startswith("login ok as ")
    assert server.logins[-1] == (server.username, True)
    assert server.received == []


def test_check_says_when_the_certificate_is_not_trusted(server: SmtpTestServer,
                                                         tmp_path: Path) -> None:
    other = write_test_pki(tmp_path / "other", common_name="someone else")
    with pytest.raises(PermanentSendError, match="certificate not trusted"):
        SmtpSender(settings(server, ca_file=str(other.ca_file))).check()
