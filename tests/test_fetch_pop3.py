"""POP3 fetch stage against a real Dovecot."""

from __future__ import annotations

import poplib
import ssl
from pathlib import Path
from typing import Any

import pytest
from dovecot import CuttingProxy, DovecotServer, MailUser, write_test_pki

from connector.errors import AuthenticationError, FetchError
from connector.fetch import open_mailbox
from connector.fetch.pop3 import Pop3Mailbox


def make_message(n: int, body_lines: int = 3) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(body_lines))
    return (
        b"From: customer%d@example.org\r\nTo: support@example.com\r\n"
        b"Subject: POP request %d\r\n\r\n" % (n, n)
    ) + body


@pytest.fixture
def retr_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Message numbers RETRieved, to prove what was downloaded."""
    calls: list[int] = []
    original = poplib.POP3.retr

    def recording_retr(self: poplib.POP3, which: Any) -> Any:
        calls.append(int(which))
        return original(self, which)

    monkeypatch.setattr(poplib.POP3, "retr", recording_retr)
    return calls


def server_uidls(settings: Any) -> list[str]:
    """UIDLs on the server, from a separate session."""
    with Pop3Mailbox(settings) as other:
        return [m.ref for m in other.list_new(set())]


def test_uidl_listing_with_list_sizes_and_retr(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n, body_lines=n * 5) for n in range(3)]
    dovecot.append(mailbox_user, raws)
    settings = dovecot.account(mailbox_user, protocol="pop3")
    with open_mailbox(settings) as mailbox:
        assert isinstance(mailbox, Pop3Mailbox)
        assert mailbox.has_capability("UIDL")
        listed = mailbox.list_new(set())
        state = mailbox.state()
        fetched = list(mailbox.fetch(listed))
    stored = dovecot.list_folder(mailbox_user)
    assert [m.size for m in listed] == [m.size for m in stored]
    assert len({m.ref for m in listed}) == 3
    assert all(m.ref == m.uidl and m.uidvalidity is None for m in listed)
    assert state.refs == {m.ref for m in listed} and state.uidvalidity is None
    assert [m.raw for m in fetched] == raws
    assert [m.ref for m in fetched] == [m.ref for m in listed]
    # The same mailbox seen again has the same UIDLs.
    assert server_uidls(settings) == [m.ref for m in listed]


def test_only_new_small_messages_are_retrieved(
    dovecot: DovecotServer, mailbox_user: MailUser, retr_calls: list[int]
) -> None:
    old, big, new = make_message(1), make_message(2, body_lines=200), make_message(3)
    dovecot.append(mailbox_user, [old, big, new])
    settings = dovecot.account(mailbox_user, protocol="pop3", max_size=1500)
    with Pop3Mailbox(settings) as mailbox:
        everything = mailbox.list_new(set())
        known = {everything[0].ref}
        listed = mailbox.list_new(lambda ref: ref in known)
        assert [(m.ref, m.too_large) for m in listed] == [
            (everything[1].ref, True),
            (everything[2].ref, False),
        ]
        fetched = list(mailbox.fetch(listed))
    assert [m.raw for m in fetched] == [None, new]
    assert fetched[0].size == len(big)
    assert retr_calls == [3]


def test_nothing_is_deleted_unless_configured(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    settings = dovecot.account(mailbox_user, protocol="pop3")
    with Pop3Mailbox(settings) as mailbox:
        first, second = mailbox.fetch(mailbox.list_new(set()))
        mailbox.mark_processed(first)
        mailbox.mark_failed(second)
    assert len(dovecot.uids(mailbox_user)) == 2


def test_delete_after_processing_deletes_at_quit_only_the_processed_message(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n) for n in range(3)]
    dovecot.append(mailbox_user, raws)
    settings = dovecot.account(mailbox_user, protocol="pop3", delete_after_processing=True)
    mailbox = Pop3Mailbox(settings)
    mailbox.connect()
    processed, failed, _untouched = mailbox.fetch(mailbox.list_new(set()))
    mailbox.mark_processed(processed)
    mailbox.mark_failed(failed)
    assert processed.ref not in mailbox.state().refs
    assert [m.ref for m in mailbox.list_new(set())] == [failed.ref, _untouched.ref]
    with pytest.raises(FetchError, match="not in this POP3 session"):
        mailbox.mark_processed(processed)
    assert len(dovecot.uids(mailbox_user)) == 3  # DELE is not committed before QUIT
    mailbox.close()
    assert [m.raw for m in dovecot.list_folder(mailbox_user)] == raws[1:]


def test_deletion_is_rolled_back_when_the_connection_drops(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    settings = dovecot.account(mailbox_user, protocol="pop3", delete_after_processing=True)
    mailbox = Pop3Mailbox(settings)
    mailbox.connect()
    first, _second = mailbox.fetch(mailbox.list_new(set()))
    mailbox.mark_processed(first)
    dovecot.kick(mailbox_user)
    mailbox.close()  # QUIT fails on the dead connection; close() does not raise
    assert len(dovecot.uids(mailbox_user)) == 2


def test_connection_cut_in_the_middle_of_retr_raises_and_deletes_nothing(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n, body_lines=300) for n in range(3)]
    dovecot.append(mailbox_user, raws)
    with CuttingProxy(dovecot.pop3_port) as proxy:
        settings = dovecot.account(
            mailbox_user, protocol="pop3", port=proxy.port, delete_after_processing=True
        )
        mailbox = Pop3Mailbox(settings)
        mailbox.connect()
        listed = mailbox.list_new(set())
        proxy.cut_after(len(raws[0]) + 100 + len(raws[1]) // 2)
        received = []
        with pytest.raises(FetchError, match="connection lost"):
            for message in mailbox.fetch(listed):
                mailbox.mark_processed(message)
                received.append(message)
        assert [m.raw for m in received] == raws[:1]
        assert not mailbox.connected
        mailbox.close()
    assert [m.raw for m in dovecot.list_folder(mailbox_user)] == raws


def test_long_lines_are_retrieved_intact(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    raw = b"Subject: wide\r\nContent-Type: text/html\r\n\r\n<p>" + b"x" * 10_000 + b"</p>\r\n"
    dovecot.append(mailbox_user, raw)
    with Pop3Mailbox(dovecot.account(mailbox_user, protocol="pop3")) as mailbox:
        (fetched,) = mailbox.fetch(mailbox.list_new(set()))
    assert fetched.raw == raw


def test_dot_stuffed_lines_come_back_unstuffed(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raw = b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n"
    dovecot.append(mailbox_user, raw)
    with Pop3Mailbox(dovecot.account(mailbox_user, protocol="pop3")) as mailbox:
        (fetched,) = mailbox.fetch(mailbox.list_new(set()))
    assert fetched.raw == raw


def test_check_reports_the_maildrop(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    mailbox = Pop3Mailbox(dovecot.account(mailbox_user, protocol="pop3"))
    try:
        line = mailbox.check()
    finally:
        mailbox.close()
    assert "OK, 2 messages" in line and mailbox_user.password not in line
    assert mailbox.ensure_folders() == []


def test_pop3s_verified_against_the_ca(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, make_message(1))
    settings = dovecot.account(mailbox_user, protocol="pop3", security="tls")
    assert settings.port == dovecot.pop3s_port
    mailbox = Pop3Mailbox(settings)
    with mailbox:
        assert isinstance(mailbox._conn.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        assert [m.raw for m in mailbox.fetch(mailbox.list_new(set()))] == [make_message(1)]


def test_stls_upgrades_the_plain_port(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, make_message(1))
    settings = dovecot.account(mailbox_user, protocol="pop3", security="starttls")
    assert settings.port == dovecot.pop3_port
    mailbox = Pop3Mailbox(settings)
    with mailbox:
        assert isinstance(mailbox._conn.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        assert mailbox.has_capability("UIDL")
        assert len(list(mailbox.fetch(mailbox.list_new(set())))) == 1


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_with_a_different_ca_is_refused(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, security: str
) -> None:
    other_ca = write_test_pki(tmp_path, common_name="another CA").ca_file
    settings = dovecot.account(
        mailbox_user, protocol="pop3", security=security, ca_file=str(other_ca)
    )
    mailbox = Pop3Mailbox(settings)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED") as info:
        mailbox.connect()
    assert not isinstance(info.value, AuthenticationError)
    assert not mailbox.connected


def test_wrong_password_raises_authentication_error(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    settings = dovecot.account(mailbox_user, protocol="pop3", password="wrong-secret-42")
    mailbox = Pop3Mailbox(settings)
    with pytest.raises(AuthenticationError) as info:
        mailbox.connect()
    assert settings.name in str(info.value)
    assert "wrong-secret-42" not in str(info.value)
    assert not mailbox.connected


def test_handles_from_another_account_are_refused(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, make_message(1))
    settings = dovecot.account(mailbox_user, protocol="pop3")
    with Pop3Mailbox(settings) as mailbox:
        (listed,) = mailbox.list_new(set())
    other = dovecot.account(mailbox_user, protocol="pop3", name="other")
    with Pop3Mailbox(other) as mailbox, pytest.raises(FetchError):
        mailbox.mark_processed(listed)
