"""Replies by PEC from OTOBO/Znuny, the whole chain over real sockets: the invoker's request
(as OTOBO's REST requester sends it: the account in the URL, the event data as JSON, the shared
secret as Basic auth) to the bridge's webhook server, the durable queue, the worker reading the
ticket and the agent's latest article through TicketGet on the GenericInterface double
(tests/otobo_double.py), the PEC message on a real SMTP server with TLS, and the result written
back as an internal note that also empties ``PECReply``."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dovecot import TestPki as Pki
from otobo_double import OtoboDouble
from outbound_chain import OutboundChain, wait_for
from smtp_server import SmtpTestServer

from connector.hosts.base import NewTicket
from connector.hosts.otobo import OtoboAdapter
from connector.outbound.queue import JobState
from connector.outbound.settings import OutboundConfig, outbound_from_raw

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = "otobo-shared-secret-5521"
FROM = "assistenza@pec.example.it"
REQUESTER = "mario.rossi@pec.example.it"
ACCOUNT = "pec-main"


@pytest.fixture
def smtp(pki: Pki) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pki, mode="starttls", username=FROM, password="pec-pw") as server:
        yield server


@pytest.fixture(scope="module")
def otobo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtoboDouble]:
    with OtoboDouble(tmp_path_factory.mktemp("otobo") / "state.json") as double:
        yield double


@pytest.fixture
def otobo(otobo_server: OtoboDouble) -> OtoboDouble:
    otobo_server.reset()
    return otobo_server


def outbound_config(tmp_path: Path, smtp: SmtpTestServer) -> OutboundConfig:
    (tmp_path / "pw").write_text("pec-pw")
    (tmp_path / "secret").write_text(SECRET)
    raw = {"accounts": [{"name": ACCOUNT, "username": FROM, "password_file": "pw",
                         "outbound": {"display_name": "ACME Assistenza",
                                      "smtp": {"host": smtp.host, "port": smtp.port,
                                               "security": "starttls",
                                               "ca_file": str(smtp.ca_file), "timeout": 5}}}],
           "service": {"public_url": "https://bridge.example.it", "signing_secret_file": "secret",
                       "host": "127.0.0.1", "port": 0, "max_body_bytes": 4096},
           "host": {"type": "otobo", "otobo": {"user": "pmb-agent"}}}
    return outbound_from_raw(raw, str(tmp_path / "config.yaml"), tmp_path)


class Agent:
    """What an OTOBO agent does in the agent interface, as GenericInterface calls."""

    def __init__(self, double: OtoboDouble) -> None:
        self.double = double
        self.http = requests.Session()
        self.http.trust_env = False

    def call(self, method: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
        body = {"UserLogin": self.double.user, "Password": self.double.password, **data}
        resp = self.http.request(method, self.double.url + path, json=body, timeout=10)
        resp.raise_for_status()
        answer = resp.json()
        assert "Error" not in answer, answer
        return answer

    def reply(self, ticket_id: str, text: str, pdf: bytes | None = None) -> None:
        """A note visible to the customer, written by the agent, with a file."""
        data: dict[str, Any] = {"TicketID": ticket_id, "Article": {
            "CommunicationChannel": "Internal", "SenderType": "agent",
            "IsVisibleForCustomer": 1, "From": "Giulia Bianchi <giulia@example.it>",
            "Subject": "Risposta", "Body": f"<p>{text}</p>",
            "ContentType": "text/html; charset=utf-8"}}
        if pdf is not None:
            data["Attachment"] = [{"Content": base64.b64encode(pdf).decode(),
                                   "ContentType": "application/pdf", "Filename": "cert.pdf"}]
        self.call("PATCH", f"/Ticket/{ticket_id}", data)

    def ask_pec_reply(self, ticket_id: str, account: str) -> None:
        self.call("PATCH", f"/Ticket/{ticket_id}", {
            "TicketID": ticket_id, "DynamicField": [{"Name": "PECReply", "Value": account}]})


class Bridge:
    def __init__(self, tmp_path: Path, smtp: SmtpTestServer, otobo: OtoboDouble) -> None:
        self.config = outbound_config(tmp_path, smtp)
        self.path = tmp_path / "bridge.sqlite3"
        self.adapter = OtoboAdapter(otobo.settings(tags_field="PMBTags"))
        self.chain = OutboundChain(self.config, self.path, self.adapter)
        self.store, self.queue, self.api = self.chain.store, self.chain.queue, self.chain.api
        self.service = self.chain.start()

    def stop(self) -> None:
        self.chain.stop()

    def invoke(self, ticket_id: str, *, account: str = ACCOUNT,
               secret: str = SECRET) -> tuple[int, dict[str, Any]]:
        """The request OTOBO's REST requester makes for the shipped invoker."""
        body = json.dumps({"Event": "TicketDynamicFieldUpdate_PECReply", "TicketID": ticket_id,
                           "FieldName": "PECReply", "OldValue": "", "UserID": "2"}).encode()
        auth = base64.b64encode(f"postmaster-bridge:{secret}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=10)
        conn.request("POST", f"/hooks/otobo/{account}", body=body,
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Basic {auth}"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, (json.loads(data) if data.startswith(b"{") else {})


@pytest.fixture
def bridge(tmp_path: Path, smtp: SmtpTestServer, otobo: OtoboDouble) -> Iterator[Bridge]:
    b = Bridge(tmp_path, smtp, otobo)
    yield b
    b.stop()


def test_the_agents_article_goes_out_by_pec_and_the_result_comes_back_as_a_note(
        bridge: Bridge, otobo: OtoboDouble, smtp: SmtpTestServer) -> None:
    number = bridge.adapter.create_ticket(NewTicket(
        subject="Richiesta certificato", requester_email=REQUESTER,
        requester_name="Mario Rossi", body_text="Vorrei il certificato.",
        external_id="pmb-in-1")).id
    bridge.store.map_message_ids(number, ["inbound-1@pec.example.org"], direction="in",
                                 account=ACCOUNT)
    ticket_id = otobo.ticket_by_number(number)["TicketID"]
    agent = Agent(otobo)
    agent.reply(ticket_id, "Ecco il certificato richiesto.", pdf=b"%PDF-1.4 cert")
    agent.ask_pec_reply(ticket_id, ACCOUNT)

    status, answer = bridge.invoke(ticket_id)

    assert status == 202 and answer["duplicate"] is False
    assert smtp.delivered.wait(10)
    (got,) = smtp.received
    assert got.tls and got.rcpt_tos == (REQUESTER,)
    msg = got.message()
    assert msg["To"] == f"Mario Rossi <{REQUESTER}>" or msg["To"] == REQUESTER
    assert f"[Ticket#{number}]" in msg["Subject"]
    assert "Ecco il certificato richiesto." in msg.get_body(("plain",)).get_content()
    assert msg["In-Reply-To"] == "<inbound-1@pec.example.org>"
    [pdf] = [p for p in msg.iter_attachments() if p.get_filename() == "cert.pdf"]
    assert pdf.get_payload(decode=True) == b"%PDF-1.4 cert"
    job = wait_for(lambda: (j := bridge.queue.job(answer["job"])) and j.reported and j)
    assert job.state == JobState.SENT
    ticket = otobo.ticket_by_number(number)
    note = ticket["Article"][-1]
    assert (note["CommunicationChannel"], note["IsVisibleForCustomer"]) == ("Internal", 0)
    assert "Sent by PEC" in note["Body"] and job.message_id in note["Body"]
    fields = {f["Name"]: f["Value"] for f in ticket["DynamicField"]}
    assert fields["PECReply"] == ""  # the request is answered
    assert "pec_sent" in fields["PMBTags"].split()


def test_the_invoker_must_present_the_secret_and_the_ticket_must_ask(
        bridge: Bridge, otobo: OtoboDouble, smtp: SmtpTestServer) -> None:
    number = bridge.adapter.create_ticket(NewTicket(
        subject="Domanda", requester_email=REQUESTER, requester_name="Mario",
        body_text="?", external_id="pmb-in-2")).id
    ticket_id = otobo.ticket_by_number(number)["TicketID"]
    Agent(otobo).reply(ticket_id, "Risposta")
    assert bridge.invoke(ticket_id, secret="wrong-secret-0000")[0] == 401
    assert bridge.invoke(ticket_id, account="nobody")[0] == 401
    assert bridge.queue.jobs() == []
    # Authentic, but nobody set PECReply on the ticket: nothing is sent.
    status, answer = bridge.invoke(ticket_id)
    assert status == 202
    job = wait_for(lambda: (j := bridge.queue.job(answer["job"])) and
                   j.state == JobState.SKIPPED and j)
    assert "no reply by this account was asked for" in (job.error or "")
    assert smtp.received == []
