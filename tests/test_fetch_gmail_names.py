"""Gmail-style folder names through the IMAP mailbox: "/" as the hierarchy separator and the
reserved "[Gmail]/..." folders. A Dovecot with Gmail's separator stands in for Gmail, whose
label semantics it does not have: on Gmail, MOVE out of INBOX adds the target label and
removes \\Inbox (Google's "IMAP extensions" page), which is the same call made here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dovecot import DovecotServer

from connector.fetch import open_mailbox

MAIL = b"From: a@example.org\r\nSubject: s\r\nMessage-ID: <g@example.org>\r\n\r\nhi\r\n"


@pytest.fixture(scope="module")
def gmail_like() -> Iterator[DovecotServer]:
    with DovecotServer(separator="/") as server:
        yield server


@pytest.mark.parametrize(("processed", "error"), [
    ("[Gmail]/All Mail", "Helpdesk/Errors"),
    ("Helpdesk/Done", "[Gmail]/Spam"),
])
def test_moves_to_gmail_style_folders_take_mail_out_of_the_inbox(
        gmail_like: DovecotServer, processed: str, error: str) -> None:
    user = gmail_like.add_user()
    gmail_like.append(user, MAIL, folder="[Gmail]/All Mail")  # Gmail's own folders exist
    gmail_like.append(user, MAIL, folder="[Gmail]/Spam")
    gmail_like.append(user, [MAIL, MAIL])
    account = gmail_like.account(user, processed_folder=processed, error_folder=error)
    with open_mailbox(account) as mailbox:
        created = mailbox.ensure_folders()
        assert not any(name.startswith("[Gmail]") for name in created)
        first, second = mailbox.list_new(set())
        mailbox.mark_processed(first)
        mailbox.mark_failed(second)
    assert gmail_like.list_folder(user, "INBOX") == []
    assert len(gmail_like.list_folder(user, processed)) == 1 + (processed.startswith("[Gmail]"))
    assert len(gmail_like.list_folder(user, error)) == 1 + (error.startswith("[Gmail]"))
