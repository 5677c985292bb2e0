"""Bounded work per mail (issue 12, rows "20,000 attachments", "5,000 Cc", "60 MB through
import/deliver"): however hostile the mail, it costs a bounded number of helpdesk calls and
never blocks its account; ``max_size`` holds on every entry point. Real Dovecot, Zendesk faked
by `responses` and validated against its OpenAPI description."""

from __future__ import annotations

import io
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from bridge_cli import cli_output
from dovecot import DovecotServer, MailUser
from zendesk_responses import (
    CUSTOMER,
    SUPPORT_ADDRESS,
    Bridge,
    FakeZendesk,
    account,
    customer_mail,
    write_config,
)

from connector.cli import EX_DATAERR
from connector.fetch.files import iter_files, read_stdin_message
from connector.mail.mimetree import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_PARTS,
    HeadersTruncatedDefect,
    build_tree,
)

UPLOADS = r"^/api/v2/uploads"
TICKETS = r"^/api/v2/tickets$"


def many_attachments(count: int, *, message_id: str = "many@example.org") -> bytes:
    """One mail with ``count`` tiny attachments (about 100 bytes each on the wire)."""
    head = (f"From: {CUSTOMER}\r\nTo: {SUPPORT_ADDRESS}\r\nSubject: Allegati\r\n"
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nVedi allegati.\r\n")
    parts = "".join(f"--b\r\nContent-Type: text/plain; name=a{i}.txt\r\nContent-Disposition: "
                    f"attachment; filename=a{i}.txt\r\n\r\nx{i}\r\n" for i in range(count))
    return (head + parts + "--b--\r\n").encode()


def test_twenty_thousand_attachments_cost_a_bounded_number_of_uploads(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    """Issue 12: a 2 MB mail with 20,000 attachments made 2,723 upload calls in 120 s and
    blocked its account. Now: 20 uploads (19 files and one archive with the rest) plus the
    original message (the parse kept only the first 10,000 parts), one ticket, and the
    account goes on with the next mail."""
    raw = many_attachments(20_000)
    assert 1.9e6 < len(raw) < 2.5e6
    dovecot.append(mailbox_user, raw)
    dovecot.append(mailbox_user, customer_mail("Dopo", "after@example.org"))
    bridge = Bridge(write_config(tmp_path, [account(dovecot, mailbox_user, "support")]))
    try:
        summary = bridge.poll()
    finally:
        bridge.close()
    assert summary.counts["ticketed"] == 2 and summary.error is None
    assert len(zendesk.calls_to("POST", UPLOADS)) == 21
    first = min(zendesk.ticket_list(), key=lambda t: t["id"])
    comment = first["comments"][0]
    names = [a["file_name"] for a in comment["attachments"]]
    assert names[:19] == [f"a{i}.txt" for i in range(19)]
    archive = next(a for a in comment["attachments"] if a["file_name"].endswith(".zip"))
    inside = zipfile.ZipFile(io.BytesIO(archive["data"])).namelist()
    assert len(inside) == MAX_PARTS - 2 - 19  # root and text part count as parts
    assert inside[0] == "00001-a19.txt"
    assert any(n.endswith(".eml") for n in names)  # the whole mail: nothing is lost
    assert f"{len(inside)} more attachments are in {archive['file_name']}" in comment["plain"]
    assert dovecot.list_folder(mailbox_user, "INBOX") == []


def test_five_thousand_cc_addresses_make_a_bounded_number_of_users(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    """Issue 12: a mail with 5,000 Cc addresses created 5,000 helpdesk users."""
    ccs = [f"persona{i}@example.net" for i in range(5_000)]
    raw = customer_mail("Tanti in copia", "cc@example.org",
                        headers=[("Cc", ", ".join(ccs))])
    dovecot.append(mailbox_user, raw)
    users_before = len(zendesk.users)
    bridge = Bridge(write_config(tmp_path, [account(dovecot, mailbox_user, "support")]))
    try:
        assert bridge.poll().counts["ticketed"] == 1
    finally:
        bridge.close()
    create = zendesk.calls_to("POST", TICKETS)[0].json["ticket"]
    assert [cc["user_email"] for cc in create["email_ccs"]] == ccs[:20]
    assert len(zendesk.users) - users_before <= 21  # the requester and 20 CCs
    plain = zendesk.ticket_list()[0]["comments"][0]["plain"]
    assert "4980 more Cc addresses, not added to the ticket" in plain
    assert "persona20@example.net" in plain and "and 4940 more" in plain


def test_the_caps_are_configurable(dovecot: DovecotServer, mailbox_user: MailUser,
                                   tmp_path: Path, zendesk: FakeZendesk) -> None:
    dovecot.append(mailbox_user, many_attachments(12))
    from zendesk_responses import zendesk_host

    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          host=zendesk_host(max_uploads_per_mail=5, max_ccs_per_mail=3))
    bridge = Bridge(config)
    try:
        assert bridge.poll().counts["ticketed"] == 1
    finally:
        bridge.close()
    assert len(zendesk.calls_to("POST", UPLOADS)) == 5
    names = [a["file_name"] for a in zendesk.ticket_list()[0]["comments"][0]["attachments"]]
    assert names == ["a0.txt", "a1.txt", "a2.txt", "a3.txt", "more-attachments-8.zip"]


# -- header caps --------------------------------------------------------------------------------


def test_header_blocks_are_bounded_and_the_body_still_found() -> None:
    many = b"".join(b"X-Spam-%d: y\r\n" % i for i in range(MAX_HEADERS + 500))
    huge = b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n"
    for block in (many, huge):
        raw = b"From: a@example.org\r\nSubject: hi\r\n" + block + b"\r\nthe body\r\n"
        part = build_tree(raw)
        assert len(part.keys()) <= MAX_HEADERS
        assert part["Subject"] == "hi"
        assert part.body() == b"the body\r\n"
        assert any(isinstance(d, HeadersTruncatedDefect) for d in part.defects)


# -- max_size on every entry point ------------------------------------------------------------


def big_mail(size: int) -> bytes:
    head = customer_mail("Enorme", "big@example.org")
    return head + b"A" * (size - len(head))


def test_import_does_not_read_a_mail_over_max_size(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(big_mail(60 * 1024 * 1024))
    tracemalloc.start()
    try:
        found = list(iter_files([path], max_size=32 * 1024 * 1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(m.raw, m.size) for m in found] == [(None, 60 * 1024 * 1024)]
    assert peak < 1024 * 1024  # counted from the file's size, never read


@pytest.mark.parametrize("container", ["mbox", "maildir"])
def test_mbox_and_maildir_messages_over_max_size_are_only_counted(
        tmp_path: Path, container: str) -> None:
    import mailbox

    small, large = customer_mail("Piccola", "s@example.org"), big_mail(3 * 1024 * 1024)
    box: mailbox.Mailbox = (mailbox.mbox(tmp_path / "box") if container == "mbox"
                            else mailbox.Maildir(tmp_path / "box"))
    box.add(small)
    box.add(large)
    box.close()
    found = list(iter_files([tmp_path / "box"], max_size=1024 * 1024))
    sizes = sorted((m.raw is None, m.size) for m in found)
    assert sizes[0] == (False, len(small))
    assert sizes[1][0] is True and sizes[1][1] >= len(large)


def test_import_of_a_60_mb_mail_fails_it_without_a_ticket(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(big_mail(60 * 1024 * 1024))
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")])
    code, _ = cli_output("-q", "-c", str(config), "import", str(path))
    assert code == EX_DATAERR  # failed for good: in the error list
    assert zendesk.ticket_list() == []
    code, text = cli_output("-q", "-c", str(config), "errors", "list")
    assert "message too large: 62914560 bytes" in text


def test_deliver_bounces_a_mail_over_max_size_without_keeping_it(
        dovecot: DovecotServer, mailbox_user: MailUser, tmp_path: Path,
        zendesk: FakeZendesk, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support",
                                             max_size="1MB")])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(big_mail(3 * 1024 * 1024))))
    code, _ = cli_output("-q", "-c", str(config), "deliver")
    assert code == EX_DATAERR  # the MTA bounces it to the sender with the reason
    assert "message too large" in capsys.readouterr().err
    assert zendesk.ticket_list() == []


def test_read_stdin_keeps_at_most_max_size_bytes() -> None:
    stream = io.BytesIO(b"From MAILER-DAEMON\n" + big_mail(5 * 1024 * 1024))
    message = read_stdin_message(stream, max_size=1024 * 1024)
    assert message.raw is None and message.size == 5 * 1024 * 1024
    small = customer_mail("Piccola", "s@example.org")
    assert read_stdin_message(io.BytesIO(small), max_size=1024 * 1024).raw == small


def test_errors_replay_obeys_max_size(dovecot: DovecotServer, mailbox_user: MailUser,
                                      tmp_path: Path, zendesk: FakeZendesk) -> None:
    """A mail quarantined under a larger max_size is not replayed past a smaller one."""
    from connector.service.pipeline import Outcome
    from connector.store.base import MessageState

    big = big_mail(2 * 1024 * 1024)
    bridge = Bridge(write_config(tmp_path, [account(dovecot, mailbox_user, "support",
                                                    max_size="1MB")]))
    try:
        record = bridge.store.begin_message("support", "file:old.eml", sha256=None)
        bridge.store.quarantine(record.id, big)
        bridge.store.finish_message(record.id, MessageState.FAILED, error="earlier failure")
        bridge.store.reopen_message(record.id)
        result = bridge.pipeline(bridge.config.accounts[0]).process("file:old.eml", big,
                                                                    len(big))
    finally:
        bridge.close()
    assert result.outcome == Outcome.FAILED and "message too large" in (result.reason or "")
    assert zendesk.ticket_list() == []


def test_a_dry_run_shows_the_bounded_calls(dovecot: DovecotServer, mailbox_user: MailUser,
                                           tmp_path: Path) -> None:
    import json

    path = tmp_path / "many.eml"
    raw = many_attachments(30).replace(
        b"Subject: Allegati", b"Cc: " + b", ".join(b"p%d@example.net" % i for i in range(50))
        + b"\r\nSubject: Allegati")
    path.write_bytes(raw)
    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          host={"type": "dry-run"})
    code, text = cli_output("-q", "-c", str(config), "import", "--calls", str(path))
    calls = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    uploads = [c for c in calls if c["path"] == "/api/v2/uploads"]
    create = next(c for c in calls if c["path"] == "/api/v2/tickets")
    assert len(uploads) == 20 and uploads[-1]["upload"]["filename"] == "more-attachments-11.zip"
    assert len(create["ticket"]["email_ccs"]) == 20


def test_the_parser_limits_are_configurable(tmp_path: Path, dovecot: DovecotServer,
                                            mailbox_user: MailUser) -> None:
    from connector.config import load_config
    from connector.mail.mimetree import ParseLimits, current_limits, set_limits
    from connector.mail.parse import parse_message

    config = write_config(tmp_path, [account(dovecot, mailbox_user, "support")],
                          limits={"mime_parts": 50, "headers": 100, "header_bytes": "64KB"})
    limits = load_config(config).limits
    assert limits == ParseLimits(mime_parts=50, headers=100, header_bytes=64 * 1024)
    try:
        set_limits(limits)
        message = parse_message(many_attachments(200))
        assert len(message.attachments) == 50 - 2
        assert "TooManyPartsDefect" in message.defects
        headers = b"".join(b"X-H-%d: v\r\n" % i for i in range(150))
        assert "HeadersTruncatedDefect" in parse_message(
            b"From: a@example.org\r\n" + headers + b"\r\nbody").defects
    finally:
        set_limits(ParseLimits())
    assert current_limits() == ParseLimits()


def test_parse_ahead_workers_use_the_configured_limits() -> None:
    from connector.mail.mimetree import ParseLimits, set_limits
    from connector.service.parsing import ParsePool

    set_limits(ParseLimits(mime_parts=30))
    try:
        with ParsePool(1) as pool:
            pending = pool.submit(many_attachments(100), account_is_pec=False, account="a",
                                  ref="1")
            assert pending is not None
            prepared = pending.result()
    finally:
        set_limits(ParseLimits())
    assert prepared is not None and len(prepared.message.attachments) == 30 - 2
