"""PEC end to end (issue 4): real PEC mail in a real Dovecot mailbox, through the poller and the
pipeline, into the Zendesk test double (tests/zendesk_double.py, its own process).

What is checked is what an agent would see in Zendesk: who the requester is, the subject, the
comments (public or internal) and their attachments, downloaded back from the double and
compared byte for byte with what the mailbox served, and the tags. The mailbox side is checked
too: processed mail leaves the inbox for the Processed folder.

The samples are real provider output (tests/data/pec-samples, see EXPECTED.md there). They are
stored with bare LF line ends; an IMAP server holds and serves mail with CRLF, so the tests
append them with CRLF line ends, and "byte-exact" means equal to what was appended and to what
Dovecot serves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP, compat32
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from bridge_cli import cli_streams
from dovecot import DovecotServer, MailUser
from pec_provider import make_circuit
from shared_material import pec_sample
from zendesk_double import ZendeskDouble

from connector.config import Config, load_config
from connector.errors import ConfigError
from connector.hosts.base import HostAdapter, NewTicket
from connector.hosts.factory import make_host
from connector.service.filtering import load_rules
from connector.service.pipeline import Pipeline
from connector.service.runner import AccountPoller, AccountSummary
from connector.store import MessageState
from connector.store.sqlite import SQLiteStore

ACCOUNT = "pec-inbox"
ACCOUNT_TAG = "pmb_pec_inbox"

ARUBA_ENVELOPE = "aruba-posta-certificata-2014-01.eml"
ARUBA_IDENTIFICATIVO = "opec275.20141107165200.03048.08.1.17@pec.aruba.it"
ARUBA_MSGID = "NEOEQO$8B558E13C0664DE7004C1EFB790D1A09@pec.it"
SOGEI_ENVELOPE = "sogei-sdi-posta-certificata-invio-file-2018.eml"
SOGEI_IDENTIFICATIVO = "opec288.20181208122618.17535.2665.1.3@pcert.sogei.it"
SOGEI_ATTACHMENTS = {"IT02652600210_00007_MT_002.xml", "IT02652600210_00007.xml"}

# One message the bridge "sent" (anonymised 2024 samples): its acceptance and its failure.
SENT_ACCEPTANCE = "anon-aruba-accettazione-2024-placeholder-sig.eml"
SENT_FAILURE = "anon-aruba-errore-consegna-2024-placeholder-sig.eml"
SENT_MSGID = "SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it"
SENT_IDENTIFICATIVO = "opec210312.20241115182038.288127.606.1.53@fakepec.it"

UNMATCHED_RECEIPT = "aruba-accettazione-2014-01.eml"

SERVICE_PART_NAMES = {"daticert.xml", "smime.p7s", "smime.p7m"}


def sample(name: str) -> bytes:
    """A sample as an IMAP server holds it: CRLF line ends, otherwise unchanged."""
    return re.sub(rb"\r?\n", b"\r\n", pec_sample(name).read_bytes())


#: A test PEC circuit (tests/pec_provider.py) whose CA every config here trusts: mail the
#: tests build, and the anonymised samples whose signature is a placeholder, are signed by its
#: provider to stand for genuine provider output.
CIRCUIT = make_circuit()


def signed_sample(name: str) -> bytes:
    """A sample with a placeholder signature, signed again by the test provider."""
    return CIRCUIT.sign(sample(name))


# -- the Zendesk double ---------------------------------------------------------------------------


def requester_email(zd: ZendeskDouble, ticket: dict[str, Any]) -> str:
    return zd.state()["users"][str(ticket["requester_id"])]["email"]


def download(attachment: dict[str, Any], zd: ZendeskDouble) -> bytes:
    """An attachment's bytes as an agent would download them (its content_url)."""
    session = requests.Session()
    session.trust_env = False
    resp = session.get(f"{zd.url}/attachments/token/{attachment['token']}/", timeout=10)
    resp.raise_for_status()
    return resp.content


def attachment_names(ticket: dict[str, Any]) -> list[str]:
    return [a["file_name"] for c in ticket["comments"] for a in c["attachments"]]


def eml_attachments(ticket: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [a for c in ticket["comments"] for a in c["attachments"]
            if a["file_name"].startswith(prefix) and a["file_name"].endswith(".eml")]


def original_attachments(envelope: bytes) -> dict[str, bytes]:
    """File name -> decoded bytes of the attachments of an envelope's postacert.eml."""
    outer = message_from_bytes(envelope, policy=compat32)
    [postacert] = [p for p in outer.walk() if p.get_filename() == "postacert.eml"]
    [original] = postacert.get_payload()
    return {p.get_filename(): p.get_payload(decode=True) for p in original.walk()
            if p.get_filename()}


def internal_notes(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in ticket["comments"] if not c["public"]]


# -- the bridge -----------------------------------------------------------------------------------


def write_config(tmp_path: Path, dovecot: DovecotServer, user: MailUser, zd: ZendeskDouble,
                 **account: Any) -> Path:
    """A config file: one account on ``user``'s mailbox (a PEC account over IMAPS verified
    against the fixture's CA unless ``account`` says otherwise), the double as Zendesk."""
    (tmp_path / "imap-password").write_text(user.password)
    (tmp_path / "zendesk-token").write_text(zd.api_token)
    (tmp_path / "test-pec-ca.pem").write_bytes(CIRCUIT.ca_pem)
    settings: dict[str, Any] = {
        "name": ACCOUNT, "pec": True, "host": "127.0.0.1", "port": dovecot.imaps_port,
        "security": "tls", "ca_file": dovecot.ca_file, "username": user.name,
        "password_file": str(tmp_path / "imap-password"), "initial_sync": "all",
        "timeout": 10,
    }
    settings.update(account)
    data = {
        "store": {"path": str(tmp_path / "ledger.sqlite3")},
        "host": {"type": "zendesk", "url": zd.url, "timeout": 10, "max_attempts": 2,
                 "auth": {"type": "api_token", "email": zd.email,
                          "api_token_file": str(tmp_path / "zendesk-token")}},
        "accounts": [{k: v for k, v in settings.items() if v is not None}],
        "pec": {"trust_anchors": [str(tmp_path / "test-pec-ca.pem")]},
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Bridge:
    """The bridge as `postmaster-bridge run` wires it, one account, polled on demand."""

    config: Config
    store: SQLiteStore
    host: HostAdapter
    poller: AccountPoller = field(init=False)

    def __post_init__(self) -> None:
        account = self.config.accounts[0]
        pipeline = Pipeline(account, self.config.host, self.store, self.host,
                            load_rules(self.config))
        self.poller = AccountPoller(account, self.store, pipeline)

    @property
    def account_name(self) -> str:
        return self.config.accounts[0].name

    def poll(self) -> AccountSummary:
        summary = self.poller.poll()
        assert summary.error is None, summary.line()
        return summary


@pytest.fixture
def bridge_for() -> Iterator[Callable[[Path], Bridge]]:
    stores: list[SQLiteStore] = []

    def make(path: Path) -> Bridge:
        config = load_config(path)
        store = SQLiteStore(config.store.path)
        stores.append(store)
        return Bridge(config, store, make_host(config.host))

    yield make
    for store in stores:
        store.close()


def assert_all_processed(dovecot: DovecotServer, user: MailUser, appended: list[bytes]) -> None:
    assert dovecot.list_folder(user, "INBOX") == []
    assert sorted(m.raw for m in dovecot.list_folder(user, "Processed")) == sorted(appended)


# -- mail the tests build ------------------------------------------------------------------------
# Envelopes and receipts the samples do not cover, drawn after pec-format.md sections 3, 4 and
# 6. They are unsigned: a test cannot sign as a provider (the signature verdict is "missing").


def parse_mail(raw: bytes) -> Any:
    return message_from_bytes(raw, policy=SMTP)


def ordinary_mail(*, sender: str, to: str, subject: str, message_id: str, body: str,
                  in_reply_to: str | None = None, references: str | None = None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 10 Nov 2014 09:00:00 +0100"
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = f"<{references}>"
    msg.set_content(body)
    return msg.as_bytes()


def daticert_part(tipo: str, *, sender: str, recipient: str, subject: str,
                  identificativo: str, msgid: str, day: str, time: str,
                  extra: str = "") -> MIMEApplication:
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="{tipo}" errore="nessuno">
    <intestazione>
        <mittente>{sender}</mittente>
        <destinatari tipo="certificato">{recipient}</destinatari>
        <risposte>{sender}</risposte>
        <oggetto>{subject}</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>ARUBA PEC S.p.A.</gestore-emittente>
        <data zona="+0100"><giorno>{day}</giorno><ora>{time}</ora></data>
        <identificativo>{identificativo}</identificativo>
        <msgid>&lt;{msgid}&gt;</msgid>
        {extra}
    </dati>
</postacert>
"""
    part = MIMEApplication(xml.encode(), "xml", policy=SMTP)
    part.add_header("Content-Disposition", "inline", filename="daticert.xml")
    return part


def transport_envelope(original: bytes, *, sender: str, recipient: str, subject: str,
                       identificativo: str, msgid: str) -> bytes:
    """A busta di trasporto as pec-format.md section 4 draws it, unsigned (a test cannot sign
    as a provider): text, daticert.xml and the original as postacert.eml."""
    envelope = MIMEMultipart("mixed", policy=SMTP)
    envelope["Subject"] = f"POSTA CERTIFICATA: {subject}"
    envelope["From"] = f'"Per conto di: {sender}" <posta-certificata@pec.aruba.it>'
    envelope["Reply-To"] = sender
    envelope["To"] = recipient
    envelope["Date"] = "Mon, 10 Nov 2014 10:00:00 +0100"
    envelope["Message-ID"] = f"<{identificativo}>"
    envelope["X-Riferimento-Message-ID"] = f"<{msgid}>"
    envelope["X-Trasporto"] = "posta-certificata"
    envelope["X-TipoRicevuta"] = "completa"
    envelope.attach(MIMEText(f"Messaggio di posta certificata\n\nIl giorno 10/11/2014 alle "
                             f"ore 10:00:00 (+0100) il messaggio \"{subject}\" e' stato inviato "
                             f"da \"{sender}\"\nindirizzato a:\n{recipient}\n", "plain",
                             "utf-8", policy=SMTP))
    envelope.attach(daticert_part(
        "posta-certificata", sender=sender, recipient=recipient, subject=subject,
        identificativo=identificativo, msgid=msgid, day="10/11/2014", time="10:00:00",
        extra='<ricevuta tipo="completa" />'))
    inner = MIMEMessage(parse_mail(original), policy=SMTP)
    inner.add_header("Content-Disposition", "inline", filename="postacert.eml")
    envelope.attach(inner)
    return envelope.as_bytes()


def delivery_receipt(*, sender: str, recipient: str, subject: str, identificativo: str,
                     msgid: str) -> bytes:
    """A ricevuta di avvenuta consegna (sintetica: text and daticert.xml only)."""
    receipt = MIMEMultipart("mixed", policy=SMTP)
    receipt["Subject"] = f"CONSEGNA: {subject}"
    receipt["From"] = "posta-certificata@pec.aruba.it"
    receipt["To"] = sender
    receipt["Date"] = "Mon, 17 Nov 2014 09:15:02 +0100"
    receipt["Message-ID"] = "<opec275.20141117091502.04242.01.1.61@pec.aruba.it>"
    receipt["X-Riferimento-Message-ID"] = f"<{msgid}>"
    receipt["X-Ricevuta"] = "avvenuta-consegna"
    receipt.attach(MIMEText(
        f"Ricevuta di avvenuta consegna\n\nIl giorno 17/11/2014 alle ore 09:15:02 (+0100) il "
        f"messaggio \"{subject}\" proveniente da \"{sender}\" ed indirizzato a \"{recipient}\" "
        f"e' stato consegnato nella casella di destinazione.\nIdentificativo messaggio: "
        f"{identificativo}\n", "plain", "utf-8", policy=SMTP))
    receipt.attach(daticert_part(
        "avvenuta-consegna", sender=sender, recipient=recipient, subject=subject,
        identificativo=identificativo, msgid=msgid, day="17/11/2014", time="09:15:02",
        extra=f'<ricevuta tipo="sintetica" />\n        <consegna>{recipient}</consegna>'))
    return receipt.as_bytes()


ANOMALY_REASON = "il messaggio non proviene da un gestore di posta certificata"


def anomaly_envelope(original: bytes, *, sender: str, recipient: str, subject: str) -> bytes:
    """A busta di anomalia as pec-format.md section 4 describes it (no real sample exists):
    X-Trasporto: errore, subject "ANOMALIA MESSAGGIO: ", From "Per conto di:", the original's
    Message-ID kept, the provider's text giving the error, the original attached as
    postacert.eml, no daticert.xml. Unsigned."""
    parsed = parse_mail(original)
    envelope = MIMEMultipart("mixed", policy=SMTP)
    envelope["Subject"] = f"ANOMALIA MESSAGGIO: {subject}"
    envelope["From"] = f'"Per conto di: {sender}" <posta-certificata@pec.aruba.it>'
    envelope["Reply-To"] = sender
    envelope["To"] = recipient
    envelope["Date"] = "Tue, 11 Nov 2014 08:30:00 +0100"
    envelope["Message-ID"] = parsed["Message-ID"]
    envelope["X-Trasporto"] = "errore"
    envelope.attach(MIMEText(
        "Anomalia nel messaggio\n\nIl giorno 11/11/2014 alle ore 08:30:00 (+0100) e' stato "
        f"ricevuto il messaggio \"{subject}\" proveniente da \"{sender}\"\nindirizzato a:\n"
        f"{recipient}\nTali dati non sono stati certificati per il seguente errore: "
        f"{ANOMALY_REASON}\nIl messaggio originale e' incluso in allegato.\n", "plain", "utf-8",
        policy=SMTP))
    inner = MIMEMessage(parsed, policy=SMTP)
    inner.add_header("Content-Disposition", "inline", filename="postacert.eml")
    envelope.attach(inner)
    return envelope.as_bytes()


# -- 1. envelopes become tickets ------------------------------------------------------------------


def test_envelopes_become_tickets_from_the_real_sender_with_the_envelope_attached(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    aruba, sogei = sample(ARUBA_ENVELOPE), sample(SOGEI_ENVELOPE)
    dovecot.append(mailbox_user, [aruba, sogei])
    served = {m.raw for m in dovecot.list_folder(mailbox_user)}
    assert served == {aruba, sogei}  # what the mailbox serves is what was appended

    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    summary = bridge.poll()

    assert summary.counts["ticketed"] == 2, summary.line()
    tickets = {t["subject"]: t for t in zd.tickets()}
    # The original's subject without the provider's "POSTA CERTIFICATA: ", exactly as
    # certified: PEC tickets keep the reply prefix ("Re: archetipo", as EXPECTED.md says).
    assert set(tickets) == {"Re: archetipo", "Invio File 7339338 (SIMULAZIONE)"}
    for subject, raw, sender, identificativo, msgid, when, originals in (
        ("Re: archetipo", aruba, "thinkstudio@pec.it", ARUBA_IDENTIFICATIVO, ARUBA_MSGID,
         "2014-11-07T16:52:00+01:00", set()),
        ("Invio File 7339338 (SIMULAZIONE)", sogei, "sdi03@pec.fatturapa.it",
         SOGEI_IDENTIFICATIVO, "4163125586355393.1544268377979@pec.fatturapa.it",
         "2018-12-08T12:26:18+01:00", SOGEI_ATTACHMENTS),
    ):
        ticket = tickets[subject]
        # The requester is who wrote the certified message, never posta-certificata@.
        assert requester_email(zd, ticket) == sender
        first = ticket["comments"][0]
        assert first["public"] is True
        assert "Messaggio di posta certificata" not in first["plain_body"]  # provider's text
        # The original's attachments, plus the envelope; never the provider's service parts.
        names = attachment_names(ticket)
        assert not SERVICE_PART_NAMES & {n.lower() for n in names}
        envelopes = eml_attachments(ticket, "pec-envelope")
        assert len(envelopes) == 1
        assert set(names) == originals | {envelopes[0]["file_name"]}
        assert envelopes[0]["content_type"] == "message/rfc822"
        assert download(envelopes[0], zd) == raw  # byte-exact, signature and all
        assert {"pec_connector", ACCOUNT_TAG} <= set(ticket["tags"])
        assert "pec_signature_not_valid" not in ticket["tags"]
        assert "pec_received_on_ordinary_mailbox" not in ticket["tags"]
        notes = internal_notes(ticket)
        assert len(notes) == 1
        note = notes[0]["plain_body"]
        assert f"PEC identificativo: {identificativo}" in note
        assert f"Message-ID of the certified message: {msgid}" in note
        assert f"Certified at: {when}" in note
        assert "Provider signature: valid" in note

    aruba_body = tickets["Re: archetipo"]["comments"][0]["plain_body"]
    assert "funziona?" in aruba_body and "Think Studio" in aruba_body
    sogei_ticket = tickets["Invio File 7339338 (SIMULAZIONE)"]
    assert "Invio file IT02652600210_00007.xml" in sogei_ticket["comments"][0]["plain_body"]
    # The invoice files exactly as the certified original carries them (read with the
    # standard library, independently of the bridge's parser).
    expected = original_attachments(sogei)
    assert set(expected) == SOGEI_ATTACHMENTS
    for att in sogei_ticket["comments"][0]["attachments"]:
        if att["file_name"] in expected:
            assert download(att, zd) == expected[att["file_name"]]
    assert_all_processed(dovecot, mailbox_user, [aruba, sogei])


def test_pec_default_skip_existing_leaves_mail_already_in_the_box_alone(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    aruba, sogei = sample(ARUBA_ENVELOPE), sample(SOGEI_ENVELOPE)
    dovecot.append(mailbox_user, aruba)
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd, initial_sync=None))
    assert bridge.config.accounts[0].initial_sync == "skip_existing"

    first = bridge.poll()
    assert first.counts["skipped"] == 1 and first.counts["fetched"] == 0, first.line()
    assert zd.tickets() == []
    assert [m.raw for m in dovecot.list_folder(mailbox_user)] == [aruba]

    dovecot.append(mailbox_user, sogei)  # arrives after the first pass: ingested
    second = bridge.poll()
    assert second.counts["ticketed"] == 1, second.line()
    assert [t["subject"] for t in zd.tickets()] == ["Invio File 7339338 (SIMULAZIONE)"]
    assert [m.raw for m in dovecot.list_folder(mailbox_user)] == [aruba]
    assert [m.raw for m in dovecot.list_folder(mailbox_user, "Processed")] == [sogei]


# -- 2. receipts for mail the bridge sent ---------------------------------------------------------


def open_ticket(host: HostAdapter, subject: str, requester: str) -> str:
    return host.create_ticket(NewTicket(subject=subject, requester_email=requester,
                                        requester_name=requester, body_text="Our question",
                                        tags=(ACCOUNT_TAG,))).id


@pytest.mark.parametrize("recorded", [SENT_MSGID, SENT_IDENTIFICATIVO],
                         ids=["by-msgid", "by-identificativo"])
def test_receipts_become_internal_notes_on_the_ticket_that_sent_the_message(
        recorded: str, tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser,
        zd: ZendeskDouble, bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Test PEC", "rec@fakepec.it")
    # What the outbound side records when it sends a reply from this ticket.
    bridge.store.map_message_ids(ticket_id, [recorded], direction="out",
                                 account=bridge.account_name)
    acceptance, failure = signed_sample(SENT_ACCEPTANCE), signed_sample(SENT_FAILURE)

    dovecot.append(mailbox_user, acceptance)
    assert bridge.poll().counts["noted"] == 1
    ticket = zd.ticket(ticket_id)
    assert "pec_accepted" in ticket["tags"]
    assert "pec_delivery_failed" not in ticket["tags"]

    dovecot.append(mailbox_user, failure)
    assert bridge.poll().counts["noted"] == 1

    assert [str(t["id"]) for t in zd.tickets()] == [ticket_id]  # no new ticket
    ticket = zd.ticket(ticket_id)
    assert {"pec_connector", "pec_accepted", "pec_delivery_failed", ACCOUNT_TAG} <= \
        set(ticket["tags"])
    assert ticket["status"] != "closed"
    comments = ticket["comments"]
    assert len(comments) == 3  # our question, then one note per receipt
    accepted_note, failed_note = comments[1], comments[2]
    for note, raw in ((accepted_note, acceptance), (failed_note, failure)):
        assert note["public"] is False
        assert [a["file_name"].startswith("pec-receipt") for a in note["attachments"]] == [True]
        assert download(note["attachments"][0], zd) == raw
        assert SENT_IDENTIFICATIVO in note["plain_body"]
    assert "2024-11-15T18:20:38+01:00" in accepted_note["plain_body"]
    assert "rec@fakepec.it" in accepted_note["plain_body"]
    failed = failed_note["plain_body"]
    assert "5.1.1" in failed and "indirizzo non valido" in failed
    assert "2024-11-15T18:21:03+01:00" in failed
    assert "rec@fakepec.it" in failed
    assert_all_processed(dovecot, mailbox_user, [acceptance, failure])


def test_failure_receipt_matches_on_its_x_riferimento_header_alone(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # The anonymised failure's header says ...@pec.it where its daticert says ...@fakepec.it
    # (EXPECTED.md #21); the bridge recorded the header's form, so only the header matches.
    riferimento = SENT_MSGID.replace("@fakepec.it", "@pec.it")
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Test PEC", "rec@fakepec.it")
    bridge.store.map_message_ids(ticket_id, [riferimento], direction="out",
                                 account=bridge.account_name)
    failure = signed_sample(SENT_FAILURE)
    dovecot.append(mailbox_user, failure)

    assert bridge.poll().counts["noted"] == 1
    assert [str(t["id"]) for t in zd.tickets()] == [ticket_id]
    note = zd.ticket(ticket_id)["comments"][-1]
    assert note["public"] is False and "5.1.1" in note["plain_body"]
    assert "pec_delivery_failed" in zd.ticket(ticket_id)["tags"]


def test_delivery_receipt_tags_the_ticket_delivered(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Preventivo", "cliente@pec.example.it")
    bridge.store.map_message_ids(ticket_id, ["reply-77@helpdesk.example.it"], direction="out",
                                 account=bridge.account_name)
    receipt = CIRCUIT.sign(delivery_receipt(sender="helpdesk@pec.example.it",
                               recipient="cliente@pec.example.it", subject="Preventivo",
                               identificativo="opec275.20141117091500.04241.01.1.60@pec.aruba.it",
                               msgid="reply-77@helpdesk.example.it"))
    dovecot.append(mailbox_user, receipt)

    assert bridge.poll().counts["noted"] == 1
    ticket = zd.ticket(ticket_id)
    assert {"pec_connector", "pec_delivered"} <= set(ticket["tags"])
    assert "pec_delivery_failed" not in ticket["tags"]
    note = ticket["comments"][-1]
    assert note["public"] is False
    assert "cliente@pec.example.it" in note["plain_body"]
    assert "2014-11-17T09:15:02+01:00" in note["plain_body"]
    assert download(note["attachments"][0], zd) == receipt
    assert_all_processed(dovecot, mailbox_user, [receipt])


def test_receipt_for_a_closed_ticket_is_not_lost(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # A non-delivery notice can arrive 24 h after sending (or after an outage of the bridge),
    # by when the ticket may be closed, and Zendesk refuses comments on a closed ticket.
    # Expected: a follow-up ticket of the closed one whose only comment is the internal
    # receipt note (linked with via_followup_source_id), the mail processed.
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    closed = open_ticket(bridge.host, "Test PEC", "rec@fakepec.it")
    bridge.store.map_message_ids(closed, [SENT_MSGID], direction="out",
                                 account=bridge.account_name)
    zd.set_status(closed, "closed")
    failure = signed_sample(SENT_FAILURE)
    dovecot.append(mailbox_user, failure)

    bridge.poll()

    assert dovecot.list_folder(mailbox_user, "Error") == []
    assert_all_processed(dovecot, mailbox_user, [failure])
    [follow_up] = [t for t in zd.tickets() if str(t["id"]) != closed]
    assert str(follow_up.get("via_followup_source_id")) == closed
    assert [c["public"] for c in follow_up["comments"]] == [False]
    assert "5.1.1" in follow_up["comments"][0]["plain_body"]
    assert download(follow_up["comments"][0]["attachments"][0], zd) == failure
    assert "pec_delivery_failed" in follow_up["tags"]


# -- 3. receipts that match nothing -------------------------------------------------------------


def test_unmatched_receipt_new_ticket_policy_opens_a_ticket_with_only_an_internal_note(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    receipt = sample(UNMATCHED_RECEIPT)
    dovecot.append(mailbox_user, receipt)
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_unmatched_receipts="new_ticket"))
    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = zd.tickets()
    assert len(ticket["comments"]) == 1
    only = ticket["comments"][0]
    assert only["public"] is False  # nobody is mailed about a receipt
    assert ticket["is_public"] is False
    assert "opec275.20141114182632.23219.07.1.48@pec.aruba.it" in only["plain_body"]
    [att] = only["attachments"]
    assert att["file_name"].startswith("pec-receipt") and download(att, zd) == receipt
    assert {"pec_connector", "pec_accepted", ACCOUNT_TAG} <= set(ticket["tags"])
    assert_all_processed(dovecot, mailbox_user, [receipt])


def test_unmatched_receipt_catch_all_policy_notes_on_the_catch_all_ticket(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    receipt = sample(UNMATCHED_RECEIPT)
    dovecot.append(mailbox_user, receipt)
    # The catch-all ticket exists before the bridge is configured with its id.
    host = make_host(load_config(write_config(tmp_path, dovecot, mailbox_user, zd)).host)
    catch_all = open_ticket(host, "PEC receipts nobody claimed", "pec@example.com")
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_unmatched_receipts="catch_all",
                                     pec_catch_all_ticket=catch_all))
    assert bridge.poll().counts["noted"] == 1

    assert [str(t["id"]) for t in zd.tickets()] == [catch_all]
    ticket = zd.ticket(catch_all)
    assert len(ticket["comments"]) == 2
    note = ticket["comments"][1]
    assert note["public"] is False
    assert "opec275.20141114182632.23219.07.1.48@pec.aruba.it" in note["plain_body"]
    assert download(note["attachments"][0], zd) == receipt
    assert "pec_accepted" in ticket["tags"]
    assert_all_processed(dovecot, mailbox_user, [receipt])


def test_unmatched_receipt_ignore_policy_calls_no_host_and_processes_the_mail(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    receipt = sample(UNMATCHED_RECEIPT)
    dovecot.append(mailbox_user, receipt)
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_unmatched_receipts="ignore"))
    zd.clear_requests()
    assert bridge.poll().counts["ignored"] == 1

    assert zd.requests_log() == []
    assert zd.tickets() == []
    assert_all_processed(dovecot, mailbox_user, [receipt])


# -- 4. threading on the identificativo and on the sender's Message-ID --------------------------


def test_replies_thread_on_the_identificativo_and_on_the_senders_message_id(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = zd.tickets()

    # A client that quotes the postacert it received cites the identificativo ...
    by_identificativo = ordinary_mail(
        sender="thinkstudio@pec.it", to="l.battistini@pec.it", subject="Re: Re: archetipo",
        message_id="reply-1@pec.it", body="Risposta che cita l'identificativo.",
        in_reply_to=ARUBA_IDENTIFICATIVO)
    # ... another cites the sender's own Message-ID (M).
    by_msgid = ordinary_mail(
        sender="thinkstudio@pec.it", to="l.battistini@pec.it", subject="Re: archetipo (2)",
        message_id="reply-2@pec.it", body="Risposta che cita il Message-ID del mittente.",
        references=ARUBA_MSGID)
    # On a PEC mailbox replies arrive certified: the original inside answers I.
    certified_reply = CIRCUIT.sign(transport_envelope(
        ordinary_mail(sender="thinkstudio@pec.it", to="l.battistini@pec.it",
                      subject="Re: archetipo (3)", message_id="reply-3@pec.it",
                      body="Risposta certificata.", in_reply_to=ARUBA_IDENTIFICATIVO),
        sender="thinkstudio@pec.it", recipient="l.battistini@pec.it",
        subject="Re: archetipo (3)",
        identificativo="opec275.20141110100000.00001.01.1.1@pec.aruba.it",
        msgid="reply-3@pec.it"))
    dovecot.append(mailbox_user, [by_identificativo, by_msgid, certified_reply])
    summary = bridge.poll()
    assert summary.counts["followed_up"] == 3, summary.line()

    assert [t["id"] for t in zd.tickets()] == [ticket["id"]]
    bodies = [c["plain_body"] for c in zd.ticket(ticket["id"])["comments"]]
    for text in ("Risposta che cita l'identificativo.",
                 "Risposta che cita il Message-ID del mittente.", "Risposta certificata."):
        assert sum(text in b for b in bodies) == 1, (text, bodies)
    assert_all_processed(dovecot, mailbox_user,
                         [sample(ARUBA_ENVELOPE), by_identificativo, by_msgid, certified_reply])


def test_reply_citing_the_identificativo_of_a_message_the_bridge_sent_follows_up_its_ticket(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # The recipient's client quotes the postacert it received, whose Message-ID is the
    # identificativo I of our message (pec-format.md section 7: "Index both M and I for every
    # sent message"). The bridge learns I from the acceptance receipt and maps it onto the
    # ticket the receipt matched (never onto a catch-all or unmatched-receipt ticket).
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Test PEC", "rec@fakepec.it")
    bridge.store.map_message_ids(ticket_id, [SENT_MSGID], direction="out",
                                 account=bridge.account_name)
    dovecot.append(mailbox_user, signed_sample(SENT_ACCEPTANCE))
    assert bridge.poll().counts["noted"] == 1

    reply = ordinary_mail(sender="rec@fakepec.it", to="sender@fakepec.it",
                          subject="Re: Test PEC", message_id="answer-1@fakepec.it",
                          body="Ecco la nostra risposta.", in_reply_to=SENT_IDENTIFICATIVO)
    dovecot.append(mailbox_user, reply)
    summary = bridge.poll()

    assert [str(t["id"]) for t in zd.tickets()] == [ticket_id], summary.line()
    assert summary.counts["followed_up"] == 1
    assert "Ecco la nostra risposta." in zd.ticket(ticket_id)["comments"][-1]["plain_body"]


# -- 5. a PEC on an ordinary mailbox --------------------------------------------------------------


def test_envelope_on_an_ordinary_mailbox_is_unwrapped_and_tagged(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser,
        zd: ZendeskDouble) -> None:
    aruba = sample(ARUBA_ENVELOPE)
    dovecot.append(mailbox_user, aruba)
    config = write_config(tmp_path, dovecot, mailbox_user, zd, name="support", pec=False,
                          protocol="imap", port=dovecot.imap_port, security="none",
                          ca_file=None)

    code, _, out = cli_streams("--config", str(config), "run", "--once")

    assert code == 0, out
    assert "support: fetched=1 ticketed=1" in out
    [ticket] = zd.tickets()
    assert ticket["subject"] == "Re: archetipo"  # the certified subject, exactly
    assert requester_email(zd, ticket) == "thinkstudio@pec.it"
    assert {"pec_connector", "pec_received_on_ordinary_mailbox", "pmb_support"} <= \
        set(ticket["tags"])
    [note] = internal_notes(ticket)
    assert "on an ordinary mailbox" in note["plain_body"]
    assert f"PEC identificativo: {ARUBA_IDENTIFICATIVO}" in note["plain_body"]
    [envelope] = eml_attachments(ticket, "pec-envelope")
    assert download(envelope, zd) == aruba
    assert_all_processed(dovecot, mailbox_user, [aruba])


# -- 6. anomaly envelopes -------------------------------------------------------------------------


def test_anomaly_envelope_opens_a_flagged_ticket_with_the_raw_attached(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    original = ordinary_mail(sender="mario.rossi@example.com", to="helpdesk@pec.example.it",
                             subject="Richiesta preventivo", message_id="preventivo-1@example.com",
                             body="Buongiorno, vorrei un preventivo per 3 licenze.")
    anomaly = CIRCUIT.sign(anomaly_envelope(original, sender="mario.rossi@example.com",
                                            recipient="helpdesk@pec.example.it",
                                            subject="Richiesta preventivo"))
    dovecot.append(mailbox_user, anomaly)
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = zd.tickets()
    assert ticket["subject"] == "Richiesta preventivo"
    assert requester_email(zd, ticket) == "mario.rossi@example.com"
    assert "vorrei un preventivo per 3 licenze" in ticket["comments"][0]["plain_body"]
    assert {"pec_connector", "pec_anomaly", ACCOUNT_TAG} <= set(ticket["tags"])
    [note] = internal_notes(ticket)
    assert "anomaly" in note["plain_body"].lower()
    assert ANOMALY_REASON in note["plain_body"]
    [envelope] = eml_attachments(ticket, "pec-envelope")
    assert download(envelope, zd) == anomaly
    assert_all_processed(dovecot, mailbox_user, [anomaly])


# -- 7. the archive -------------------------------------------------------------------------------


def test_envelope_is_archived_byte_exact(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    sogei = sample(SOGEI_ENVELOPE)
    dovecot.append(mailbox_user, sogei)
    archive = tmp_path / "archive"
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     archive_dir=str(archive)))
    before = datetime.now(UTC)
    assert bridge.poll().counts["ticketed"] == 1

    files = sorted(p for p in archive.rglob("*") if p.is_file())
    assert len(files) == 1
    assert files[0].read_bytes() == sogei
    assert files[0].parent.relative_to(archive).parts[0] == ACCOUNT
    day = files[0].parent.relative_to(archive / ACCOUNT)
    assert str(day) in {before.strftime("%Y/%m/%d"), datetime.now(UTC).strftime("%Y/%m/%d")}
    [ticket] = zd.tickets()
    [envelope] = eml_attachments(ticket, "pec-envelope")
    assert download(envelope, zd) == files[0].read_bytes()


# A burst of receipts for one ticket in one pass is one ticket update, not one per receipt
# (Zendesk allows 30 updates per ticket per 10 minutes).
def test_receipts_of_one_pass_share_one_update(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Test PEC", "rec@fakepec.it")
    other_id = open_ticket(bridge.host, "Preventivo", "cliente@pec.example.it")
    bridge.store.map_message_ids(ticket_id, [SENT_MSGID], direction="out",
                                 account=bridge.account_name)
    bridge.store.map_message_ids(other_id, ["reply-77@helpdesk.example.it"], direction="out",
                                 account=bridge.account_name)
    acceptance, failure = signed_sample(SENT_ACCEPTANCE), signed_sample(SENT_FAILURE)
    delivered = CIRCUIT.sign(delivery_receipt(
        sender="helpdesk@pec.example.it", recipient="cliente@pec.example.it",
        subject="Preventivo", identificativo="opec275.20141117091500.04241.01.1.60@pec.aruba.it",
        msgid="reply-77@helpdesk.example.it"))
    dovecot.append(mailbox_user, [acceptance, failure, delivered])
    zd.clear_requests()

    summary = bridge.poll()

    assert summary.counts["noted"] == 3, summary.line()
    updates = [r for r in zd.requests_log() if r["method"] == "PUT"
               and r["path"] == f"/api/v2/tickets/{ticket_id}"]
    assert len(updates) == 1  # two receipts, one update
    ticket = zd.ticket(ticket_id)
    assert {"pec_accepted", "pec_delivery_failed"} <= set(ticket["tags"])
    note = ticket["comments"][-1]
    assert note["public"] is False
    assert "2024-11-15T18:20:38+01:00" in note["plain_body"]  # the acceptance
    assert "5.1.1" in note["plain_body"]  # the failure
    assert sorted(download(a, zd) for a in note["attachments"]) == sorted([acceptance, failure])
    assert SENT_IDENTIFICATIVO in note["plain_body"]
    # The lone receipt of the other ticket is a note of its own.
    assert "pec_delivered" in zd.ticket(other_id)["tags"]
    assert len(zd.tickets()) == 2
    states = {r.state for r in bridge.store.messages()}
    assert states == {MessageState.DONE}
    assert_all_processed(dovecot, mailbox_user, [acceptance, failure, delivered])

    # Nothing is done twice on the next pass.
    assert bridge.poll().counts["fetched"] == 0
    assert len(zd.ticket(ticket_id)["comments"]) == len(ticket["comments"])


def test_pec_facts_fill_the_mapped_custom_fields(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    fields = {"identificativo": 9001, "msgid": 9002, "certified_at": 9003, "signature": 9004}
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_custom_fields=fields))
    dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))

    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = zd.tickets()
    values = {f["id"]: f["value"] for f in ticket["custom_fields"]}
    assert values[9001] == ARUBA_IDENTIFICATIVO
    assert values[9002] == ARUBA_MSGID
    assert values[9003] == "2014-11-07T16:52:00+01:00"
    assert values[9004] == "valid"
    # Every fact is in the ticket's fields: the note would only repeat them (pec_facts_note
    # auto), and leaving it out spares the ticket update it costs.
    assert internal_notes(ticket) == []
    calls = [(r["method"], re.sub(r"/\d+", "/{id}", r["path"].split("?")[0]))
             for r in zd.requests_log()]
    assert ("PUT", "/api/v2/tickets/{id}") not in calls, calls
    assert calls.count(("POST", "/api/v2/tickets")) == 1, calls


@pytest.mark.parametrize(("facts_note", "fields", "noted"), [
    ("always", {"identificativo": 9001, "msgid": 9002, "certified_at": 9003,
                "signature": 9004}, True),
    ("auto", {"identificativo": 9001}, True),  # msgid and time only in the note
    ("auto", {}, True),
    ("never", {}, False),
])
def test_pec_facts_note_follows_the_account_setting(
        facts_note: str, fields: dict[str, int], noted: bool, tmp_path: Path,
        dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_custom_fields=fields, pec_facts_note=facts_note))
    dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))

    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = zd.tickets()
    notes = [n["plain_body"] for n in internal_notes(ticket)]
    if noted:
        [note] = notes
        assert f"PEC identificativo: {ARUBA_IDENTIFICATIVO}" in note
    else:
        assert notes == []
    # Never in the public comment, whatever the setting.
    assert ARUBA_IDENTIFICATIVO not in ticket["comments"][0]["plain_body"]
    assert eml_attachments(ticket, "pec-envelope")  # the evidence stays attached


def test_a_certified_follow_up_keeps_its_facts_note_with_every_field_mapped(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # A comment sets no ticket fields: the reply's own facts are only in its note.
    fields = {"identificativo": 9001, "msgid": 9002, "certified_at": 9003, "signature": 9004}
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_custom_fields=fields))
    dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = zd.tickets()
    assert internal_notes(ticket) == []
    reply_id = "opec275.20141110100000.00001.01.1.1@pec.aruba.it"
    dovecot.append(mailbox_user, CIRCUIT.sign(transport_envelope(
        ordinary_mail(sender="thinkstudio@pec.it", to="l.battistini@pec.it",
                      subject="Re: archetipo (3)", message_id="reply-3@pec.it",
                      body="Risposta certificata.", in_reply_to=ARUBA_IDENTIFICATIVO),
        sender="thinkstudio@pec.it", recipient="l.battistini@pec.it",
        subject="Re: archetipo (3)", identificativo=reply_id, msgid="reply-3@pec.it")))

    assert bridge.poll().counts["followed_up"] == 1

    [note] = internal_notes(zd.ticket(ticket["id"]))
    assert f"PEC identificativo: {reply_id}" in note["plain_body"]


def test_pec_facts_note_accepts_auto_always_never_only(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser,
        zd: ZendeskDouble) -> None:
    path = write_config(tmp_path, dovecot, mailbox_user, zd, pec_facts_note="sometimes")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "accounts[0].pec_facts_note"


def test_pec_custom_fields_name_known_facts_only(tmp_path: Path, dovecot: DovecotServer,
                                                 mailbox_user: MailUser,
                                                 zd: ZendeskDouble) -> None:
    path = write_config(tmp_path, dovecot, mailbox_user, zd, pec_custom_fields={"colour": 1})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "accounts[0].pec_custom_fields"
    assert "identificativo" in str(info.value)


# -- 8. forged evidence (issue 12, attacks 1 and 2) ------------------------------------------------


def test_forged_unsigned_receipt_on_an_ordinary_account_never_touches_the_victims_ticket(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # Attack 1: an ordinary unsigned mail with X-Ricevuta and a hand-written daticert, sent to
    # a non-PEC account, citing a Message-ID the bridge had received on the victim's ticket.
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd, pec=False,
                                     protocol="imap", initial_sync="all"))
    customer = ordinary_mail(sender="cliente@example.com", to="support@example.it",
                             subject="Ordine 4711", message_id="ordine-4711@example.com",
                             body="Dov'e' il mio ordine?")
    dovecot.append(mailbox_user, customer)
    assert bridge.poll().counts["ticketed"] == 1
    [victim] = zd.tickets()
    forged = delivery_receipt(sender="support@example.it", recipient="cliente@example.com",
                              subject="Ordine 4711",
                              identificativo="opec275.20141117091500.04241.01.1.60@pec.aruba.it",
                              msgid="ordine-4711@example.com")
    failure = forged.replace(b"X-Ricevuta: avvenuta-consegna",
                             b"X-Ricevuta: errore-consegna").replace(b".61@pec", b".62@pec")
    dovecot.append(mailbox_user, [forged, failure])

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 2 and summary.counts["noted"] == 0, summary.line()
    victim_after = zd.ticket(victim["id"])
    assert victim_after["comments"] == victim["comments"]
    assert set(victim_after["tags"]) == set(victim["tags"])
    legal = {"pec_accepted", "pec_delivered", "pec_delivery_failed", "pec_delivery_warning",
             "pec_taken_in_charge"}
    for ticket in zd.tickets():
        assert not legal & set(ticket["tags"]), ticket["tags"]
        if ticket["id"] != victim["id"]:
            assert "pec_receipt_unverified" in ticket["tags"]
            [note] = internal_notes(ticket)
            assert "is not one" in note["plain_body"]
            assert "ordinary (non-PEC) mailbox" in note["plain_body"]


@pytest.mark.parametrize("how", ["unsigned", "untrusted-signer", "altered"])
def test_a_receipt_that_is_not_certified_on_a_pec_account_is_ordinary_mail(
        how: str, tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser,
        zd: ZendeskDouble, bridge_for: Callable[[Path], Bridge]) -> None:
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd))
    ticket_id = open_ticket(bridge.host, "Preventivo", "cliente@pec.example.it")
    bridge.store.map_message_ids(ticket_id, ["reply-77@helpdesk.example.it"], direction="out",
                                 account=bridge.account_name)
    receipt = delivery_receipt(sender="helpdesk@pec.example.it",
                               recipient="cliente@pec.example.it", subject="Preventivo",
                               identificativo="opec275.20141117091500.04241.01.1.60@pec.aruba.it",
                               msgid="reply-77@helpdesk.example.it")
    if how == "untrusted-signer":  # a provider certificate from a CA nobody configured
        receipt = make_circuit().sign(receipt)
    elif how == "altered":  # signed by the trusted provider, then edited on the way
        receipt = CIRCUIT.sign(receipt).replace(b'filename="daticert.xml"',
                                                b'filename="daticert.xml"; size=1', 1)
    dovecot.append(mailbox_user, receipt)

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1 and summary.counts["noted"] == 0, summary.line()
    ours = zd.ticket(ticket_id)
    assert len(ours["comments"]) == 1 and "pec_delivered" not in ours["tags"]
    [other] = [t for t in zd.tickets() if str(t["id"]) != ticket_id]
    assert "pec_receipt_unverified" in other["tags"]
    assert "pec_delivered" not in other["tags"]
    expected = {"unsigned": "missing", "untrusted-signer": "untrusted",
                "altered": "invalid"}[how]
    assert f"signature is {expected}" in internal_notes(other)[0]["plain_body"]


def test_genuine_receipt_for_mail_another_account_sent_follows_the_unmatched_policy(
        tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # A receipt certifies mail sent from the mailbox that receives it: an id the bridge
    # received, or sent from another account, is no match.
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_unmatched_receipts="ignore"))
    ticket_id = open_ticket(bridge.host, "Preventivo", "cliente@pec.example.it")
    bridge.store.map_message_ids(ticket_id, ["reply-77@helpdesk.example.it"], direction="in",
                                 account=bridge.account_name)
    bridge.store.map_message_ids(ticket_id, ["reply-78@helpdesk.example.it"], direction="out",
                                 account="another-account")
    receipts = [CIRCUIT.sign(delivery_receipt(
        sender="helpdesk@pec.example.it", recipient="cliente@pec.example.it",
        subject="Preventivo", identificativo=f"opec275.2014111709150{n}.1.1.1@pec.aruba.it",
        msgid=f"reply-7{n}@helpdesk.example.it")) for n in (7, 8)]
    dovecot.append(mailbox_user, receipts)

    summary = bridge.poll()

    assert summary.counts["ignored"] == 2, summary.line()
    assert len(zd.ticket(ticket_id)["comments"]) == 1
    assert "pec_delivered" not in zd.ticket(ticket_id)["tags"]


@pytest.mark.parametrize(("signer", "facts_note"), [("unsigned", "auto"),
                                                   ("untrusted", "auto"),
                                                   ("unsigned", "never")])
def test_forged_envelope_opens_an_uncertified_ticket_that_says_so(
        signer: str, facts_note: str, tmp_path: Path, dovecot: DovecotServer,
        mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[[Path], Bridge]) -> None:
    # Attack 2: a PEC envelope with a forged daticert in someone else's name, citing the
    # identificativo of an existing certified conversation: unsigned, or signed by a provider
    # certificate of the forger's own CA. Its note is a warning: even pec_facts_note never
    # (which leaves out a certified envelope's facts) keeps it.
    bridge = bridge_for(write_config(tmp_path, dovecot, mailbox_user, zd,
                                     pec_custom_fields={"identificativo": 101,
                                                        "certified_at": 102, "msgid": 103,
                                                        "signature": 104},
                                     pec_facts_note=facts_note))
    dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))
    assert bridge.poll().counts["ticketed"] == 1
    [genuine] = zd.tickets()
    # Its original answers the genuine envelope (In-Reply-To its identificativo), and it claims
    # the genuine msgid: either would have grafted it onto the certified conversation.
    original = ordinary_mail(sender="sindaco@comune.example.it", to="l.battistini@pec.it",
                             subject="Revoca", message_id="revoca-1@comune.example.it",
                             body="Revochiamo l'incarico.", in_reply_to=ARUBA_IDENTIFICATIVO)
    forged = transport_envelope(original, sender="sindaco@comune.example.it",
                                recipient="l.battistini@pec.it", subject="Revoca",
                                identificativo=ARUBA_IDENTIFICATIVO.replace("17@", "18@"),
                                msgid=ARUBA_MSGID)
    if signer == "untrusted":
        forged = make_circuit().sign(forged)
    dovecot.append(mailbox_user, forged)

    summary = bridge.poll()

    assert summary.counts["ticketed"] == 1, summary.line()
    assert len(zd.ticket(genuine["id"])["comments"]) == len(genuine["comments"])
    [ticket] = [t for t in zd.tickets() if t["id"] != genuine["id"]]
    assert requester_email(zd, ticket) == "sindaco@comune.example.it"  # the claim, flagged
    assert "pec_signature_not_valid" in ticket["tags"]
    fields = {f["id"]: f["value"] for f in ticket.get("custom_fields", [])}
    assert fields.get(104) == {"unsigned": "missing", "untrusted": "untrusted"}[signer]
    assert not {101, 102, 103} & {k for k, v in fields.items() if v}
    [note] = internal_notes(ticket)
    text = note["plain_body"]
    assert "NOT CERTIFIED" in text and "unverified" in text
    assert "PEC message received" not in text and "Certified at" not in text
    assert "legal proof" not in text.replace("not legal proof", "")
    assert eml_attachments(ticket, "pec-unverified") and not eml_attachments(ticket,
                                                                               "pec-envelope")
    assert "not added to any existing ticket" in text
    # Its claimed ids belong to no ticket: a reply citing them cannot be captured.
    assert bridge.store.ticket_for_message_ids(
        [ARUBA_IDENTIFICATIVO.replace("17@", "18@")]) is None
    assert bridge.store.ticket_for_message_ids(["revoca-1@comune.example.it"]) is None
    assert bridge.store.ticket_for_message_ids([ARUBA_IDENTIFICATIVO]) == str(genuine["id"])
