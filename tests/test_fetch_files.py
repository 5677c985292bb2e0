"""Messages from .eml files, mbox files, Maildirs and standard input."""

from __future__ import annotations

import io
import mailbox
from pathlib import Path

import pytest

from connector.errors import FetchError
from connector.fetch.files import iter_files, read_stdin_message

EML = (
    b"From: Anna <anna@example.org>\r\nTo: support@example.com\r\nSubject: Printer\r\n"
    b"Message-ID: <eml-1@example.org>\r\n\r\nThe printer is on fire.\r\n"
)


def mbox_bytes() -> bytes:
    return (
        b"From anna@example.org Mon Jan  1 10:00:00 2024\n"
        b"From: anna@example.org\nSubject: first\n\nHello\n>From the quoted line\n\n"
        b"From bob@example.org Mon Jan  1 11:00:00 2024\n"
        b"From: bob@example.org\nSubject: second\n\nBody with trailing spaces   \n\n"
        b"From carl@example.org Mon Jan  1 12:00:00 2024\n"
        b"From: carl@example.org\nSubject: third\n\nLast\n"
    )


def test_eml_file_is_read_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(EML)
    (message,) = iter_files([path])
    assert message.raw == EML
    assert message.ref == str(path)
    assert message.size == len(EML)
    assert message.account == "import"


def test_mbox_messages_keep_their_bytes_without_the_separator(tmp_path: Path) -> None:
    path = tmp_path / "archive.mbox"
    path.write_bytes(mbox_bytes())
    messages = list(iter_files([str(path)], account="legacy"))
    assert [m.ref for m in messages] == [f"{path}#0", f"{path}#1", f"{path}#2"]
    assert [m.raw for m in messages] == [
        b"From: anna@example.org\nSubject: first\n\nHello\n>From the quoted line\n",
        b"From: bob@example.org\nSubject: second\n\nBody with trailing spaces   \n",
        b"From: carl@example.org\nSubject: third\n\nLast\n",
    ]
    assert all(m.account == "legacy" for m in messages)


def test_maildir_messages_in_new_and_cur_are_read_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    box = mailbox.Maildir(root, create=True)  # makes cur/ new/ tmp/
    box.close()
    # Written directly: mailbox.Maildir.add() would rewrite the line endings.
    scanner = EML.replace(b"Printer", b"Scanner")
    (root / "new" / "1700000000.M1P1.host").write_bytes(EML)
    (root / "cur" / "1700000001.M2P1.host:2,S").write_bytes(scanner)
    (root / "tmp" / "1700000002.M3P1.host").write_bytes(b"Subject: half written\r\n")
    messages = {m.ref: m.raw for m in iter_files([root])}
    assert messages == {
        f"{root}#1700000000.M1P1.host": EML,
        f"{root}#1700000001.M2P1.host": scanner,
    }


def test_directory_is_walked_in_name_order_skipping_hidden_entries(tmp_path: Path) -> None:
    (tmp_path / "b.eml").write_bytes(EML.replace(b"fire", b"B"))
    (tmp_path / "a.eml").write_bytes(EML.replace(b"fire", b"A"))
    (tmp_path / ".a.eml.swp").write_bytes(b"editor junk")
    (tmp_path / "empty.eml").write_bytes(b"\r\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "archive.mbox").write_bytes(mbox_bytes())
    box = mailbox.Maildir(tmp_path / "d-maildir", create=True)
    box.add(EML.replace(b"fire", b"D"))
    box.close()
    refs = [m.ref for m in iter_files([tmp_path])]
    assert refs[:2] == [str(tmp_path / "a.eml"), str(tmp_path / "b.eml")]
    assert refs[2:5] == [f"{tmp_path / 'c' / 'archive.mbox'}#{i}" for i in range(3)]
    assert len(refs) == 6 and refs[5].startswith(f"{tmp_path / 'd-maildir'}#")


def test_several_paths_keep_their_order(tmp_path: Path) -> None:
    (tmp_path / "z.eml").write_bytes(EML)
    (tmp_path / "a.eml").write_bytes(EML)
    refs = [m.ref for m in iter_files([tmp_path / "z.eml", tmp_path / "a.eml"])]
    assert refs == [str(tmp_path / "z.eml"), str(tmp_path / "a.eml")]


def test_missing_path_raises_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such file"):
        list(iter_files([tmp_path / "nope.eml"]))


def test_stdin_message_drops_an_mbox_from_line_and_has_a_content_ref() -> None:
    message = read_stdin_message(io.BytesIO(b"From someone Mon Jan  1 10:00:00 2024\n" + EML))
    again = read_stdin_message(io.BytesIO(EML))
    assert message.raw == EML
    assert message.ref == again.ref and message.ref.startswith("stdin:")
    assert message.account == "deliver"


def test_empty_stdin_raises_fetch_error() -> None:
    with pytest.raises(FetchError, match="no message"):
        read_stdin_message(io.BytesIO(b""))
