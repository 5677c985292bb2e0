"""IMAP fetch stage against a real Dovecot."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dovecot import CuttingProxy, DovecotServer, MailUser, free_port, write_test_pki

from connector.errors import AuthenticationError, ConfigError, FetchError
from connector.fetch import open_mailbox
from connector.fetch.base import Mailbox, RemoteMessage
from connector.fetch.imap import ImapMailbox, QuietIMAPClient


def make_message(n: int, body_lines: int = 3) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(body_lines))
    return (
        b"From: Customer %d <customer%d@example.org>\r\n"
        b"To: support@example.com\r\n"
        b"Subject: Request %d\r\n"
        b"Message-ID: <msg-%d@example.org>\r\n"
        b"\r\n" % (n, n, n, n)
    ) + body


class RecordingClient(QuietIMAPClient):
    """Records the UIDs of every body download, to prove batching and what was downloaded."""

    body_fetches: list[list[int]]

    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> Any:
        if any("BODY" in str(item).upper() for item in data):
            type(self).body_fetches.append(list(messages))
        return super().fetch(messages, data, modifiers)


@pytest.fixture
def recording_client() -> Iterator[type[RecordingClient]]:
    RecordingClient.body_fetches = []
    yield RecordingClient


@pytest.fixture(scope="module")
def dovecot_without_move() -> Iterator[DovecotServer]:
    """A second server that does not advertise MOVE (UIDPLUS still there)."""
    with DovecotServer(drop_imap_capabilities=["MOVE"]) as server:
        yield server


def fetch_all(mailbox: Mailbox) -> list[RemoteMessage]:
    return list(mailbox.fetch(mailbox.list_new(set())))


# -- listing and fetching -----------------------------------------------------------------


def test_list_new_gives_sizes_and_fetch_downloads_in_batches(
    dovecot: DovecotServer, mailbox_user: MailUser, recording_client: type[RecordingClient]
) -> None:
    raws = [make_message(n, body_lines=n * 10) for n in range(5)]
    uids = dovecot.append(mailbox_user, raws)
    settings = dovecot.account(mailbox_user, batch_size=2)

    with ImapMailbox(settings, client_class=recording_client) as mailbox:
        listed = mailbox.list_new(set())
        uidvalidity = mailbox.uidvalidity
        assert recording_client.body_fetches == []  # listing downloads nothing
        fetched = list(mailbox.fetch(listed))

    stored = {m.uid: m for m in dovecot.list_folder(mailbox_user)}
    assert [m.uid for m in listed] == uids
    assert [m.size for m in listed] == [stored[uid].size for uid in uids]
    assert [m.ref for m in listed] == [f"INBOX:{uidvalidity}:{uid}" for uid in uids]
    assert not any(m.too_large for m in listed)
    assert recording_client.body_fetches == [uids[0:2], uids[2:4], uids[4:5]]
    assert [m.raw for m in fetched] == [stored[uid].raw for uid in uids]
    assert [m.ref for m in fetched] == [m.ref for m in listed]
    assert all(m.account == settings.name and m.folder == "INBOX" for m in fetched)
    assert all(m.size == len(m.raw or b"") for m in fetched)


def test_fetch_uses_body_peek_so_messages_stay_unseen(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        assert len(fetch_all(mailbox)) == 2
    assert all("\\Seen" not in m.flags for m in dovecot.list_folder(mailbox_user))


def test_known_refs_are_not_listed_again(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, [make_message(n) for n in range(3)])
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        first = mailbox.list_new(set())
        known = {first[0].ref, first[2].ref}
        assert [m.ref for m in mailbox.list_new(known)] == [first[1].ref]
        assert [m.ref for m in mailbox.list_new(lambda ref: ref != first[0].ref)] == [first[0].ref]


def test_messages_flagged_deleted_by_others_are_not_listed(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    uids = dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    dovecot.set_flags(mailbox_user, [uids[0]], ["\\Deleted"])
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        assert [m.uid for m in mailbox.list_new(set())] == [uids[1]]


def test_message_expunged_between_listing_and_fetch_is_skipped(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    uids = dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        listed = mailbox.list_new(set())
        with dovecot.session(mailbox_user) as other:
            other.select_folder("INBOX")
            other.delete_messages([uids[0]])
            other.uid_expunge([uids[0]])
        assert [m.uid for m in mailbox.fetch(listed)] == [uids[1]]


def test_empty_mailbox(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        assert mailbox.list_new(set()) == []
        state = mailbox.state()
    assert state.refs == frozenset()
    assert state.uidvalidity and state.folder == "INBOX"


def test_other_folder_is_read(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, make_message(1))
    dovecot.append(mailbox_user, make_message(2), folder="Support")
    with open_mailbox(dovecot.account(mailbox_user, folder="Support")) as mailbox:
        fetched = fetch_all(mailbox)
    assert [m.raw for m in fetched] == [make_message(2)]
    assert fetched[0].ref.startswith("Support:")


def test_too_large_message_is_listed_but_not_downloaded(
    dovecot: DovecotServer, mailbox_user: MailUser, recording_client: type[RecordingClient]
) -> None:
    small, big = make_message(1), make_message(2, body_lines=300)
    uids = dovecot.append(mailbox_user, [big, small])
    settings = dovecot.account(mailbox_user, max_size=2000)
    with ImapMailbox(settings, client_class=recording_client) as mailbox:
        mailbox.ensure_folders()
        listed = mailbox.list_new(set())
        assert [(m.uid, m.too_large) for m in listed] == [(uids[0], True), (uids[1], False)]
        fetched = list(mailbox.fetch(listed))
        assert [m.raw for m in fetched] == [None, small]
        assert fetched[0].too_large and fetched[0].size == len(big)
        mailbox.mark_failed(fetched[0])
    assert recording_client.body_fetches == [[uids[1]]]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Error")] == [big]


# -- marking ------------------------------------------------------------------------------


def test_processed_and_failed_messages_move_to_folders_created_on_demand(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n) for n in range(3)]
    dovecot.append(mailbox_user, raws)
    assert dovecot.folders(mailbox_user) == {"INBOX"}
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        assert mailbox.has_capability("MOVE")
        assert sorted(mailbox.ensure_folders()) == ["Error", "Held", "Processed"]
        assert mailbox.ensure_folders() == []
        ok, bad, untouched = fetch_all(mailbox)
        mailbox.mark_processed(ok)
        mailbox.mark_failed(bad)
        assert [m.ref for m in mailbox.list_new(set())] == [untouched.ref]
    assert dovecot.folders(mailbox_user) == {"INBOX", "Processed", "Error", "Held"}
    assert [m.raw for m in dovecot.list_folder(mailbox_user)] == [raws[2]]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Processed")] == [raws[0]]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Error")] == [raws[1]]


def test_held_and_ignored_mail_move_to_their_folders(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n) for n in range(3)]
    dovecot.append(mailbox_user, raws)
    settings = dovecot.account(mailbox_user, ignored_folder="Ignored")
    with open_mailbox(settings) as mailbox:
        assert sorted(mailbox.ensure_folders()) == ["Error", "Held", "Ignored", "Processed"]
        held, ignored, processed = fetch_all(mailbox)
        mailbox.mark_held(held)
        mailbox.mark_ignored(ignored)
        mailbox.mark_processed(processed)
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Held")] == [raws[0]]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Ignored")] == [raws[1]]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Processed")] == [raws[2]]


def test_mark_accepts_a_listing_handle(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, make_message(1))
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        mailbox.ensure_folders()
        (listed,) = mailbox.list_new(set())
        mailbox.mark_failed(listed)
    assert dovecot.uids(mailbox_user) == []
    assert len(dovecot.list_folder(mailbox_user, "Error")) == 1


def test_delete_after_processing_expunges_only_that_message(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    uids = dovecot.append(mailbox_user, [make_message(n) for n in range(3)])
    dovecot.set_flags(mailbox_user, [uids[2]], ["\\Deleted"])  # someone else's pending delete
    with open_mailbox(dovecot.account(mailbox_user, delete_after_processing=True)) as mailbox:
        mailbox.ensure_folders()
        first = fetch_all(mailbox)[0]
        mailbox.mark_processed(first)
    assert dovecot.uids(mailbox_user) == uids[1:]
    assert dovecot.list_folder(mailbox_user, "Processed") == []


def test_without_move_capability_copy_and_uid_expunge_remove_exactly_one_uid(
    dovecot_without_move: DovecotServer,
) -> None:
    server = dovecot_without_move
    user = server.add_user()
    raws = [make_message(n) for n in range(4)]
    uids = server.append(user, raws)
    # Another client flagged a message \Deleted without expunging: a plain EXPUNGE would
    # take it too.
    server.set_flags(user, [uids[3]], ["\\Deleted"])
    with open_mailbox(server.account(user)) as mailbox:
        assert not mailbox.has_capability("MOVE")
        assert mailbox.has_capability("UIDPLUS")
        assert mailbox.has_capability("IDLE")
        mailbox.ensure_folders()
        listed = mailbox.list_new(set())
        assert [m.uid for m in listed] == uids[:3]
        target = next(m for m in mailbox.fetch(listed) if m.uid == uids[1])
        mailbox.mark_processed(target)
    remaining = server.list_folder(user)
    assert [m.uid for m in remaining] == [uids[0], uids[2], uids[3]]
    assert "\\Deleted" in next(m.flags for m in remaining if m.uid == uids[3])
    assert not any("\\Deleted" in m.flags for m in remaining if m.uid != uids[3])
    assert [m.raw for m in server.list_folder(user, "Processed")] == [raws[1]]


# -- state and UIDVALIDITY ----------------------------------------------------------------


def test_state_reports_uidvalidity_and_refs_and_detects_a_change(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, [make_message(1), make_message(2)])
    settings = dovecot.account(mailbox_user)
    with open_mailbox(settings) as mailbox:
        before = mailbox.state()
        stale = mailbox.list_new(set())
    assert before.uidvalidity == dovecot.uidvalidity(mailbox_user)
    assert before.refs == {m.ref for m in stale}

    new_uidvalidity = dovecot.change_uidvalidity(mailbox_user)

    with open_mailbox(settings) as mailbox:
        mailbox.ensure_folders()
        after = mailbox.state()
        assert after.uidvalidity == new_uidvalidity != before.uidvalidity
        assert after.refs.isdisjoint(before.refs) and len(after.refs) == 2
        # Refs carry the UIDVALIDITY: everything is new again under the new value...
        assert len(mailbox.list_new(before.refs)) == 2
        # ...and a handle from before the change is refused rather than moving another message.
        with pytest.raises(FetchError, match="stale"):
            mailbox.mark_processed(stale[0])
    assert len(dovecot.uids(mailbox_user)) == 2


# -- TLS and login ------------------------------------------------------------------------


def test_implicit_tls_verified_against_the_ca(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, make_message(1))
    mailbox = ImapMailbox(dovecot.account(mailbox_user, security="tls"))
    line = mailbox.check()
    try:
        assert isinstance(mailbox._client._imap.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        assert len(fetch_all(mailbox)) == 1
    finally:
        mailbox.close()
    assert "OK" in line and "1 messages" in line and mailbox_user.password not in line


def test_starttls_upgrades_the_plain_port(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    dovecot.append(mailbox_user, make_message(1))
    settings = dovecot.account(mailbox_user, security="starttls")
    assert settings.port == dovecot.imap_port
    mailbox = ImapMailbox(settings)
    with mailbox:
        assert isinstance(mailbox._client._imap.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        assert len(fetch_all(mailbox)) == 1


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_with_a_different_ca_is_refused(
    dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path, security: str
) -> None:
    other_ca = write_test_pki(tmp_path, common_name="some other CA").ca_file
    settings = dovecot.account(mailbox_user, security=security, ca_file=str(other_ca))
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED") as info:
        ImapMailbox(settings).connect()
    assert not isinstance(info.value, AuthenticationError)


def test_tls_with_system_cas_does_not_trust_the_test_ca(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    settings = dovecot.account(mailbox_user, security="tls", ca_file=None)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        ImapMailbox(settings).connect()


def test_verify_tls_off_accepts_an_unknown_ca(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    settings = dovecot.account(mailbox_user, security="tls", ca_file=None, verify_tls=False)
    with ImapMailbox(settings) as mailbox:
        assert mailbox.state().refs == frozenset()


def test_wrong_password_raises_authentication_error_without_the_password(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    settings = dovecot.account(mailbox_user, password="not-the-password-123")
    mailbox = ImapMailbox(settings)
    with pytest.raises(AuthenticationError) as info:
        mailbox.connect()
    assert settings.name in str(info.value)
    assert "not-the-password-123" not in str(info.value)
    assert not mailbox.connected


def test_unreachable_server_raises_fetch_error(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    settings = dovecot.account(mailbox_user, port=free_port(), timeout=2)
    with pytest.raises(FetchError, match=f"{settings.name}.*cannot connect"):
        ImapMailbox(settings).connect()


def test_silent_server_times_out(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    # Listening but never answering: the kernel completes the handshake, no greeting comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = dovecot.account(mailbox_user, port=silent.getsockname()[1], timeout=0.3)
        mailbox = ImapMailbox(settings)
        with pytest.raises(FetchError, match="timed out"):
            mailbox.connect()
    assert not mailbox.connected


def test_open_mailbox_picks_the_protocol(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    assert isinstance(open_mailbox(dovecot.account(mailbox_user)), ImapMailbox)
    with pytest.raises(ConfigError):
        open_mailbox(dovecot.account(mailbox_user, protocol="imap", security="ssl")).connect()
    bad = dataclasses.replace(dovecot.account(mailbox_user), protocol="nntp")
    with pytest.raises(ConfigError):
        open_mailbox(bad)


def test_imaplib_debug_capture_is_off(dovecot: DovecotServer, mailbox_user: MailUser) -> None:
    with ImapMailbox(dovecot.account(mailbox_user)) as mailbox:
        assert mailbox._client._imap.debug == 0  # type: ignore[union-attr]


# -- dropped connections ------------------------------------------------------------------


def test_connection_cut_in_the_middle_of_a_fetch_raises_and_marks_nothing(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    raws = [make_message(n, body_lines=200) for n in range(6)]
    dovecot.append(mailbox_user, raws)
    with CuttingProxy(dovecot.imap_port) as proxy:
        settings = dovecot.account(mailbox_user, port=proxy.port, batch_size=3)
        mailbox = ImapMailbox(settings)
        mailbox.connect()
        mailbox.ensure_folders()
        listed = mailbox.list_new(set())
        # The first batch (3 x ~5 kB) arrives whole, the second is cut inside a literal.
        proxy.cut_after(3 * len(raws[0]) + 3 * 200 + len(raws[0]) // 2)
        received = []
        with pytest.raises(FetchError, match="connection lost"):
            for message in mailbox.fetch(listed):
                received.append(message)
        assert [m.raw for m in received] == raws[:3]
        assert not mailbox.connected
        with pytest.raises(FetchError, match="not connected"):
            mailbox.mark_processed(received[0])
        mailbox.close()
    stored = dovecot.list_folder(mailbox_user)
    assert [m.raw for m in stored] == raws
    assert all("\\Seen" not in m.flags for m in stored)
    assert dovecot.list_folder(mailbox_user, "Processed") == []


def test_server_kick_between_batches_raises_fetch_error(
    dovecot: DovecotServer, mailbox_user: MailUser
) -> None:
    dovecot.append(mailbox_user, [make_message(n) for n in range(4)])
    mailbox = ImapMailbox(dovecot.account(mailbox_user, batch_size=2))
    mailbox.connect()
    received = []
    with pytest.raises(FetchError):
        for message in mailbox.fetch(mailbox.list_new(set())):
            received.append(message)
            if len(received) == 1:
                dovecot.kick(mailbox_user)
    mailbox.close()
    assert len(received) == 2
    assert len(dovecot.uids(mailbox_user)) == 4
    # The next poll starts over on a new connection and sees everything.
    with open_mailbox(dovecot.account(mailbox_user)) as mailbox:
        assert len(mailbox.list_new(set())) == 4


def test_server_restart_drops_the_connection_and_the_next_poll_reconnects(
    dovecot_without_move: DovecotServer,
) -> None:
    server = dovecot_without_move
    user = server.add_user()
    server.append(user, make_message(1))
    settings = server.account(user)
    mailbox = ImapMailbox(settings)
    mailbox.connect()
    server.restart()
    with pytest.raises(FetchError, match="connection lost"):
        mailbox.list_new(set())
    assert not mailbox.connected
    mailbox.close()
    with ImapMailbox(settings) as again:
        assert len(again.list_new(set())) == 1
