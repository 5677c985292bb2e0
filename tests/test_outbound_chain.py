"""The whole chain over real sockets: a signed Zendesk webhook request over HTTP to waitress,
the durable queue, the worker thread, the Zendesk API (OAS-checked fake), and the message on
a real SMTP server with TLS."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import StoreTarget
from dovecot import TestPki as Pki
from outbound_chain import OutboundChain, wait_for
from outbound_oas import BASE, FakeZendesk
from smtp_server import SmtpTestServer

from connector.hosts.zendesk import ApiTokenAuth, ZendeskAdapter, ZendeskSettings
from connector.outbound.queue import JobState
from connector.outbound.service import OutboundService
from connector.outbound.settings import OutboundConfig, outbound_from_raw
from connector.outbound.zendesk_signature import format_timestamp, sign

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = "whsec-chain-0123456789"
FROM = "assistenza@pec.example.it"
REQUESTER = "mario.rossi@pec.example.it"
PENDING_TAG = "pec_connector_reply_pec_main_pending"


@pytest.fixture
def smtp(pki: Pki) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pki, mode="starttls", username=FROM, password="pec-pw") as server:
        yield server


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeZendesk(rsps)
        fake.add_user(100, "agent@example.it", "Giulia Bianchi", role="agent")
        fake.add_user(501, REQUESTER, "Mario Rossi")
        fake.add_ticket(4711, "Richiesta certificato", 501, tags=(PENDING_TAG,))
        fake.add_comment(4711, 501, "Vorrei il certificato.")
        fake.add_comment(4711, 100, "Ecco il certificato richiesto.")
        # The trigger has just tagged the ticket: the sweep leaves it to the webhook.
        fake.tickets[4711]["updated_at"] = int(time.time())
        yield fake


def config(tmp_path: Path, smtp: SmtpTestServer) -> OutboundConfig:
    (tmp_path / "pw").write_text("pec-pw")
    (tmp_path / "secret").write_text(SECRET)
    raw = {"accounts": [{"name": "pec-main", "username": FROM, "password_file": "pw",
                         "outbound": {"display_name": "ACME Assistenza",
                                      "smtp": {"host": smtp.host, "port": smtp.port,
                                               "security": "starttls",
                                               "ca_file": str(smtp.ca_file), "timeout": 5}}}],
           "service": {"public_url": "https://bridge.example.it", "signing_secret_file": "secret",
                       "host": "127.0.0.1", "port": 0, "max_body_bytes": 4096}}
    return outbound_from_raw(raw, str(tmp_path / "config.yaml"), tmp_path)


class Bridge:
    """An OutboundService over the tmp store; ``start(crashed_worker=True)`` accepts requests
    but never processes them (a process that dies right after answering 202)."""

    def __init__(self, tmp_path: Path, smtp: SmtpTestServer, target: StoreTarget) -> None:
        self.config = config(tmp_path, smtp)
        self.target = target  # the store on each engine; a restart opens it again
        self.chain: OutboundChain | None = None

    def start(self, *, crashed_worker: bool = False) -> OutboundService:
        adapter = ZendeskAdapter(ZendeskSettings(base_url=BASE,
                                                 auth=ApiTokenAuth("agent@example.it", "tok")))
        self.chain = OutboundChain(self.config, Path(self.target.where), adapter,
                                   store=self.target.store(), queue=self.target.queue(),
                                   crashed_worker=crashed_worker)
        self.store, self.queue = self.chain.store, self.chain.queue
        return self.chain.start()

    @property
    def service(self) -> OutboundService | None:
        return self.chain.service if self.chain is not None else None

    def stop(self) -> None:
        if self.chain is not None:
            self.chain.stop()
            self.chain = None

    def post(self, body: bytes, headers: dict[str, str],
             path: str = "/hooks/zendesk/pec-main") -> tuple[int, dict[str, Any], float]:
        assert self.service is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=10)
        started = time.monotonic()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                       **headers})
        resp = conn.getresponse()
        elapsed = time.monotonic() - started
        data = resp.read()
        conn.close()
        return resp.status, (json.loads(data) if data.startswith(b"{") else {}), elapsed

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        assert self.service is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        status, data = resp.status, json.loads(resp.read())
        conn.close()
        return status, data


@pytest.fixture
def bridge(tmp_path: Path, smtp: SmtpTestServer, zendesk: FakeZendesk,
           target: StoreTarget) -> Iterator[Bridge]:
    b = Bridge(tmp_path, smtp, target)
    yield b
    b.stop()


def zendesk_delivery(ticket_id: int = 4711, invocation: str = "01HINV0001",
                     secret: str = SECRET,
                     when: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    """What Zendesk's trigger sends (the body the installed trigger's template produces)."""
    body = json.dumps({"ticket_id": str(ticket_id), "account": "pec-main", "v": 1,
                       "subject": "Richiesta certificato [#4711]",
                       "message": "<p>Ecco il certificato richiesto.</p>"}).encode()
    ts = format_timestamp(when or datetime.now(UTC))
    return body, {"X-Zendesk-Webhook-Signature": sign(secret, ts, body),
                  "X-Zendesk-Webhook-Signature-Timestamp": ts,
                  "X-Zendesk-Webhook-Invocation-Id": invocation,
                  "X-Zendesk-Webhook-Id": "01HWEBHOOK", "X-Zendesk-Account-Id": "123"}


def test_signed_webhook_to_pec_message(bridge: Bridge, smtp: SmtpTestServer,
                                       zendesk: FakeZendesk) -> None:
    bridge.start()
    assert bridge.get("/healthz")[0] == 200
    body, headers = zendesk_delivery()
    status, answer, _elapsed = bridge.post(body, headers)
    assert status == 202 and answer["duplicate"] is False
    assert smtp.delivered.wait(10)
    (got,) = smtp.received
    assert got.tls and got.login == FROM and got.rcpt_tos == (REQUESTER,)
    msg = got.message()
    assert msg["From"] == f"ACME Assistenza <{FROM}>"
    assert msg["To"] == f"Mario Rossi <{REQUESTER}>"
    assert msg["Subject"] == "Richiesta certificato [#4711]"
    assert "Ecco il certificato richiesto." in msg.get_body(("plain",)).get_content()
    job = wait_for(lambda: (j := bridge.queue.job(answer["job"])) and j.reported and j)
    assert job.state == JobState.SENT and msg["Message-ID"] == f"<{job.message_id}>"
    assert bridge.store.is_own_message_id(job.message_id)
    (note,) = zendesk.notes(4711)
    assert "Sent by PEC" in note["plain_body"] and job.message_id in note["plain_body"]
    assert "pec_sent" in zendesk.ticket_tags(4711)

    # Zendesk delivering the same invocation again changes nothing.
    status, again, _ = bridge.post(body, headers)
    assert status == 202 and again == {"job": answer["job"], "duplicate": True}
    time.sleep(0.2)
    assert len(smtp.received) == 1


def test_refusals_over_http(bridge: Bridge, smtp: SmtpTestServer) -> None:
    bridge.start()
    body, headers = zendesk_delivery(secret="not-the-secret-0000")
    assert bridge.post(body, headers)[0] == 401
    body, headers = zendesk_delivery(when=datetime.now(UTC) - timedelta(minutes=10))
    assert bridge.post(body, headers)[0] == 401  # a captured request, replayed too late
    big = b'{"ticket_id":"4711","message":"' + b"x" * 8000 + b'"}'
    assert bridge.post(big, {"X-Zendesk-Webhook-Signature": "x",
                             "X-Zendesk-Webhook-Signature-Timestamp": "y"})[0] == 413
    assert bridge.post(b"{}", {}, path="/hooks/zendesk/nobody")[0] == 401
    assert bridge.queue.jobs() == []
    assert smtp.received == []


def test_smtp_failure_after_the_202_keeps_the_job(bridge: Bridge, smtp: SmtpTestServer) -> None:
    smtp.fail_next("451 4.3.0 Try again later")
    bridge.start()
    body, headers = zendesk_delivery()
    status, answer, _ = bridge.post(body, headers)
    assert status == 202  # accepted: the sending is the worker's business
    job = wait_for(lambda: (j := bridge.queue.job(answer["job"])) and j.error and j)
    assert job.state == JobState.QUEUED and "451" in job.error  # retried later, not lost
    assert job.next_attempt_at > time.time() + 30
    assert smtp.received == []


def test_job_accepted_before_a_crash_is_sent_after_restart(bridge: Bridge,
                                                           smtp: SmtpTestServer) -> None:
    bridge.start(crashed_worker=True)
    body, headers = zendesk_delivery()
    status, answer, _ = bridge.post(body, headers)
    assert status == 202
    bridge.stop()
    assert smtp.received == []
    bridge.start()
    assert smtp.delivered.wait(10)
    wait_for(lambda: bridge.queue.job(answer["job"]).reported)
    assert len(smtp.received) == 1
    bridge.stop()
    bridge.start()  # a second restart sends nothing more
    time.sleep(0.3)
    assert len(smtp.received) == 1
