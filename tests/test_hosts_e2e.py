"""End to end against both helpdesks: the IMAP ingest and PEC ingest suites' core cases, each run
with Zendesk (tests/zendesk_double.py) and with OTOBO/Znuny (tests/otobo_double.py) as the host,
a real Dovecot mailbox, and the bridge built from its config file through ``make_host`` as
``run`` builds it. What is checked is what an agent sees on the host (tests/helpdesks.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dovecot import DovecotServer, MailUser
from helpdesks import HOSTS, Helpdesk
from otobo_double import OtoboDouble
from outbound_chain import OutboundChain
from test_pec_ingest import (
    ARUBA_ENVELOPE,
    ARUBA_IDENTIFICATIVO,
    CIRCUIT,
    SENT_ACCEPTANCE,
    SENT_FAILURE,
    SENT_IDENTIFICATIVO,
    Bridge,
    sample,
    signed_sample,
)
from zendesk_double import ZendeskDouble
from zendesk_responses import PDF, customer_mail

from connector.config import load_config
from connector.hosts.base import NewTicket
from connector.hosts.factory import make_host
from connector.store.sqlite import SQLiteStore

SUPPORT = "support@example.com"


@pytest.fixture(scope="module")
def otobo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtoboDouble]:
    with OtoboDouble(tmp_path_factory.mktemp("otobo") / "state.json") as double:
        yield double


@pytest.fixture(params=HOSTS)
def helpdesk(request: pytest.FixtureRequest, otobo_server: OtoboDouble,
             zd_server: ZendeskDouble) -> Helpdesk:
    double: ZendeskDouble | OtoboDouble = otobo_server if request.param == "otobo" else zd_server
    double.reset()
    return Helpdesk(request.param, double)


@pytest.fixture
def bridge_on(tmp_path: Path, dovecot: DovecotServer,
              mailbox_user: MailUser) -> Iterator[Callable[..., Bridge]]:
    """``bridge_on(helpdesk, **account)``: the config file for one IMAP account of the test's
    Dovecot user and the given host, and the bridge built from it."""
    stores: list[SQLiteStore] = []

    def make(helpdesk: Helpdesk, top: dict[str, Any] | None = None, **account: Any) -> Bridge:
        (tmp_path / "imap-password").write_text(mailbox_user.password)
        (tmp_path / "test-pec-ca.pem").write_bytes(CIRCUIT.ca_pem)
        settings: dict[str, Any] = {
            "name": "support", "protocol": "imap", "host": "127.0.0.1",
            "port": dovecot.imap_port, "security": "none", "username": mailbox_user.name,
            "password_file": str(tmp_path / "imap-password"), "initial_sync": "all",
            "own_addresses": [SUPPORT], "timeout": 10,
        }
        if account.get("pec"):
            settings.update({"port": dovecot.imaps_port, "security": "tls",
                             "ca_file": dovecot.ca_file})
            settings.pop("protocol")
        settings.update(account)
        data = {"store": {"path": str(tmp_path / "ledger.sqlite3")},
                "host": helpdesk.host_section(tmp_path), "accounts": [settings],
                "pec": {"trust_anchors": [str(tmp_path / "test-pec-ca.pem")]}, **(top or {})}
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        store = SQLiteStore(config.store.path)
        stores.append(store)
        return Bridge(config, store, make_host(config.host))

    yield make
    for store in stores:
        store.close()


# -- IMAP ingest ----------------------------------------------------------------------------------


def test_new_mail_becomes_one_ticket_from_the_customer_with_its_attachment(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    dovecot.append(mailbox_user, customer_mail("Richiesta modulo", "m1@example.org", pdf=True))
    bridge = bridge_on(helpdesk)

    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = helpdesk.tickets()
    assert (ticket.subject, ticket.requester) == ("Richiesta modulo", "mario.rossi@example.org")
    [article] = ticket.articles
    assert article.public and article.author == "mario.rossi@example.org"
    assert "scrivo per: Richiesta modulo." in article.text
    assert ("modulo.pdf", len(PDF)) in article.attachments
    [record] = bridge.store.messages()
    assert record.ticket_id == ticket.id
    assert dovecot.list_folder(mailbox_user) == []


def test_replies_thread_by_message_id_and_by_the_hosts_subject_reference(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    bridge = bridge_on(helpdesk)
    dovecot.append(mailbox_user, customer_mail("Richiesta modulo", "m1@example.org"))
    bridge.poll()
    [ticket] = helpdesk.tickets()
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta modulo", "m2@example.org",
                                               in_reply_to="m1@example.org",
                                               text="Ecco il modulo firmato.\n"))
    dovecot.append(mailbox_user, customer_mail(
        f"R: {helpdesk.reference(ticket.id)} Richiesta modulo", "other-client@example.org",
        text="Avete ricevuto il modulo?\n"))
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta modulo", "m4@example.org",
                                               sender="Estraneo <x@elsewhere.example>",
                                               in_reply_to="m1@example.org",
                                               text="Chi sono io?\n"))

    summary = bridge.poll()

    assert (summary.counts["followed_up"], summary.counts["noted"]) == (2, 1), summary.line()
    [ticket] = helpdesk.tickets()
    _, reply, by_subject, stranger = ticket.articles
    assert reply.public and reply.text.strip() == "Ecco il modulo firmato."
    assert reply.author == "mario.rossi@example.org"
    assert by_subject.public and "Avete ricevuto il modulo?" in by_subject.text
    assert not stranger.public and "x@elsewhere.example" in stranger.text


def test_reply_to_a_closed_ticket_opens_a_new_one(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    bridge = bridge_on(helpdesk)
    dovecot.append(mailbox_user, customer_mail("Richiesta modulo", "m1@example.org"))
    bridge.poll()
    [closed] = helpdesk.tickets()
    helpdesk.close(closed.id)
    dovecot.append(mailbox_user, customer_mail("Re: Richiesta modulo", "m2@example.org",
                                               in_reply_to="m1@example.org"))

    assert bridge.poll().counts["ticketed"] == 1

    old, new = helpdesk.tickets()
    assert len(old.articles) == 1 and old.closed
    assert new.requester == old.requester and not new.closed


def test_a_lost_create_answer_and_the_same_mail_twice_make_one_ticket(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    raw = customer_mail("Richiesta modulo", "m1@example.org")
    dovecot.append(mailbox_user, [raw, raw])
    helpdesk.lose_create_answer()
    bridge = bridge_on(helpdesk)

    bridge.poll()

    [ticket] = helpdesk.tickets()
    assert len(ticket.articles) == 1
    assert dovecot.list_folder(mailbox_user) == []


# -- PEC ingest -----------------------------------------------------------------------------------


def test_a_pec_envelope_becomes_a_ticket_with_its_facts_in_the_mapped_fields(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    aruba = sample(ARUBA_ENVELOPE)
    dovecot.append(mailbox_user, aruba)
    bridge = bridge_on(helpdesk, name="pec-inbox", pec=True,
                       pec_custom_fields=helpdesk.pec_fields())

    assert bridge.poll().counts["ticketed"] == 1

    [ticket] = helpdesk.tickets()
    assert ticket.subject == "Re: archetipo" and ticket.requester == "thinkstudio@pec.it"
    first, note = ticket.articles
    assert first.public and "funziona?" in first.text
    assert "Messaggio di posta certificata" not in first.text
    assert not note.public and f"PEC identificativo: {ARUBA_IDENTIFICATIVO}" in note.text
    assert helpdesk.field(ticket, "identificativo") == ARUBA_IDENTIFICATIVO
    assert helpdesk.field(ticket, "certified_at") == "2014-11-07T16:52:00+01:00"
    assert helpdesk.field(ticket, "signature") == "valid"
    assert helpdesk.attachment_bytes(ticket.id, "pec-envelope") == aruba  # byte-exact


def test_receipts_become_internal_notes_on_the_ticket_that_sent_the_message(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    bridge = bridge_on(helpdesk, name="pec-inbox", pec=True)
    ticket_id = bridge.host.create_ticket(NewTicket(
        subject="Test PEC", requester_email="rec@fakepec.it", requester_name="rec",
        body_text="Our question", external_id="pmb-sent-1")).id
    bridge.store.map_message_ids(ticket_id, [SENT_IDENTIFICATIVO], direction="out",
                                 account=bridge.account_name)
    acceptance, failure = signed_sample(SENT_ACCEPTANCE), signed_sample(SENT_FAILURE)
    dovecot.append(mailbox_user, acceptance)
    assert bridge.poll().counts["noted"] == 1
    dovecot.append(mailbox_user, failure)
    assert bridge.poll().counts["noted"] == 1

    [ticket] = helpdesk.tickets()
    assert ticket.id == ticket_id and not ticket.closed
    accepted, failed = ticket.notes
    assert SENT_IDENTIFICATIVO in accepted.text and "2024-11-15T18:20:38+01:00" in accepted.text
    assert "indirizzo non valido" in failed.text
    assert [name.startswith("pec-receipt") for name, _ in failed.attachments] == [True]
    assert {"pec_accepted", "pec_delivery_failed"} <= helpdesk.tags(ticket_id)
    if helpdesk.kind == "otobo":
        assert ticket.fields["PECReceiptState"] == "delivery failed"


# -- outbound: an agent's reply by PEC, and its receipt back on the ticket -----------------------

PEC_FROM = "assistenza@pec.example.it"
PEC_SECRET = "e2e-shared-secret-7741"


def agent_reply_and_ask(helpdesk: Helpdesk, ticket_id: int, reply_tag: str, text: str) -> None:
    """What an agent does on each host: writes a public reply, asks for it to go by PEC
    (Zendesk: the macro's reply tag; OTOBO: the PECReply field)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    double = helpdesk.double
    if isinstance(double, OtoboDouble):
        internal = double.ticket_by_number(ticket_id)["TicketID"]
        for data in ({"Article": {"CommunicationChannel": "Internal", "SenderType": "agent",
                                  "IsVisibleForCustomer": 1, "From": "Giulia <giulia@x.it>",
                                  "Subject": "Risposta", "Body": text,
                                  "ContentType": "text/plain; charset=utf-8"}},
                     {"DynamicField": [{"Name": "PECReply", "Value": "pec-inbox"}]}):
            resp = session.patch(f"{double.url}/Ticket/{internal}", timeout=10, json={
                "UserLogin": double.user, "Password": double.password, "TicketID": internal,
                **data})
            assert "Error" not in resp.json(), resp.text
        return
    resp = session.put(f"{double.url}/api/v2/tickets/{ticket_id}", timeout=10,
                       auth=(f"{double.email}/token", double.api_token),
                       json={"ticket": {"comment": {"body": text, "public": True,
                                                    "author_id": 100},
                                        "additional_tags": [reply_tag]}})
    resp.raise_for_status()


def deliver_hook(helpdesk: Helpdesk, app: Any, ticket_id: int) -> int:
    """The host's call to the bridge's webhook (WSGI, as the server hands it over)."""
    import base64
    import io
    import json
    from datetime import UTC, datetime

    from connector.outbound.zendesk_signature import format_timestamp, sign

    if isinstance(helpdesk.double, OtoboDouble):
        internal = helpdesk.double.ticket_by_number(ticket_id)["TicketID"]
        body = json.dumps({"Event": "TicketDynamicFieldUpdate_PECReply",
                           "TicketID": internal}).encode()
        path = "/hooks/otobo/pec-inbox"
        auth = base64.b64encode(f"postmaster-bridge:{PEC_SECRET}".encode()).decode()
        headers = {"HTTP_AUTHORIZATION": f"Basic {auth}"}
    else:
        body = json.dumps({"ticket_id": str(ticket_id), "account": "pec-inbox",
                           "v": 1}).encode()
        path = "/hooks/zendesk/pec-inbox"
        ts = format_timestamp(datetime.now(UTC))
        headers = {"HTTP_X_ZENDESK_WEBHOOK_SIGNATURE": sign(PEC_SECRET, ts, body),
                   "HTTP_X_ZENDESK_WEBHOOK_SIGNATURE_TIMESTAMP": ts,
                   "HTTP_X_ZENDESK_WEBHOOK_INVOCATION_ID": "01HE2E0001"}
    statuses: list[str] = []
    app({"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
         "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1", **headers},
        lambda status, _headers: statuses.append(status))
    return int(statuses[0].split()[0])


def test_an_agents_reply_goes_out_by_pec_and_its_receipt_comes_back_as_a_note(
        helpdesk: Helpdesk, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge], tmp_path: Path, pki: Any) -> None:
    from smtp_server import SmtpTestServer
    from test_pec_ingest import delivery_receipt

    from connector.outbound.queue import JobState
    from connector.outbound.settings import load_outbound

    with SmtpTestServer(pki, mode="starttls", username=PEC_FROM, password="pec-pw") as smtp:
        (tmp_path / "pec-pw").write_text("pec-pw")
        (tmp_path / "hook-secret").write_text(PEC_SECRET)
        config_top = {"outbound": {"from_address": PEC_FROM,
                                   "smtp": {"host": smtp.host, "port": smtp.port,
                                            "security": "starttls", "username": PEC_FROM,
                                            "password_file": str(tmp_path / "pec-pw"),
                                            "ca_file": str(smtp.ca_file), "timeout": 5}}}
        service = {"public_url": "https://bridge.example.it", "host": "127.0.0.1", "port": 0,
                   "signing_secret_file": str(tmp_path / "hook-secret")}
        bridge = bridge_on(helpdesk, {"service": service}, name="pec-inbox", pec=True,
                           **config_top)
        config = bridge.config
        outbound = load_outbound(config)
        [settings] = outbound.enabled_accounts

        dovecot.append(mailbox_user, sample(ARUBA_ENVELOPE))
        assert bridge.poll().counts["ticketed"] == 1
        [ticket] = helpdesk.tickets()
        agent_reply_and_ask(helpdesk, ticket.id, settings.reply_tag, "Ecco la risposta.")

        chain = OutboundChain(outbound, config.store.path, bridge.host, store=bridge.store)
        try:
            assert deliver_hook(helpdesk, chain.app, ticket.id) == 202
            assert chain.worker.run_once() == 1
            [job] = chain.queue.jobs()
            assert job.state == JobState.SENT, job.error
        finally:
            chain.stop()
        (got,) = smtp.received
        msg = got.message()
        assert got.rcpt_tos == ("thinkstudio@pec.it",)
        assert helpdesk.reference(ticket.id) in msg["Subject"]
        assert "Ecco la risposta." in msg.get_body(("plain",)).get_content()
        sent_id = msg["Message-ID"].strip("<>")
        assert any("Sent by PEC" in note.text and sent_id in note.text
                   for note in helpdesk.ticket(ticket.id).notes)

        # The provider's delivery receipt for the message the bridge sent: a note on the ticket.
        receipt = CIRCUIT.sign(delivery_receipt(
            sender=PEC_FROM, recipient="thinkstudio@pec.it", subject=msg["Subject"],
            identificativo="opec9.20261202.1.1@pec.aruba.it", msgid=sent_id))
        dovecot.append(mailbox_user, receipt)
        assert bridge.poll().counts["noted"] == 1
        after = helpdesk.ticket(ticket.id)
        assert any("opec9.20261202.1.1@pec.aruba.it" in note.text for note in after.notes)
        assert len(helpdesk.tickets()) == 1
        assert "pec_delivered" in helpdesk.tags(ticket.id)


def test_otobo_ticket_left_without_its_article_is_completed_on_the_next_pass(
        otobo_server: OtoboDouble, dovecot: DovecotServer, mailbox_user: MailUser,
        bridge_on: Callable[..., Bridge]) -> None:
    """OTOBO's TicketCreate is not atomic: when it keeps failing after the ticket (and its
    PMBMessageID) exist, the mail stays for the next pass, which completes that ticket."""
    otobo_server.reset()
    helpdesk = Helpdesk("otobo", otobo_server)
    otobo_server.inject(path_regex=r"/Ticket$", method="POST", between="ticket_and_article",
                        count=-1)
    otobo_server.inject(path_regex=r"/Ticket/\d+$", method="PATCH", status=503, count=-1)
    dovecot.append(mailbox_user, customer_mail("Richiesta modulo", "m1@example.org", pdf=True))
    bridge = bridge_on(helpdesk)

    first = bridge.poll()
    assert first.counts["ticketed"] == 0 and first.counts["retry"] == 1, first.line()
    [half] = helpdesk.tickets()
    assert half.articles == ()

    otobo_server.clear_faults()
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = helpdesk.tickets()
    [article] = ticket.articles
    assert article.public and ("modulo.pdf", len(PDF)) in article.attachments
    assert bridge.store.messages()[0].ticket_id == ticket.id
