"""The outbound worker end to end below the webhook: OAS-checked Zendesk fake (responses),
a real SMTP server (aiosmtpd, TLS) and the real store and queue in one SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import StoreTarget
from dovecot import TestPki as Pki
from outbound_oas import BASE, FILES, T0, FakeZendesk
from smtp_server import SmtpTestServer

from connector.hosts.zendesk import ApiTokenAuth, ZendeskAdapter, ZendeskSettings
from connector.outbound.queue import JobState, OutboundQueue, process_owner
from connector.outbound.settings import OutboundConfig, outbound_from_raw
from connector.outbound.worker import OutboundWorker
from connector.outbound.zendesk_api import ZendeskOutboundAPI
from connector.store.base import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FROM = "assistenza@pec.example.it"
REQUESTER = "mario.rossi@pec.example.it"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
REPLY_TAG = "pec_connector_reply_pec_main"
PENDING_TAG = REPLY_TAG + "_pending"


class Clock:
    def __init__(self) -> None:
        self.now = float(T0 + 100_000)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def smtp(pki: Pki) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pki, mode="tls", username=FROM, password="pec-pw") as server:
        yield server


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeZendesk(rsps)
        fake.add_user(100, "agent@example.it", "Giulia Bianchi", role="agent")
        fake.add_user(501, REQUESTER, "Mario Rossi")
        yield fake


def outbound_config(tmp_path: Path, smtp: SmtpTestServer, **outbound: Any) -> OutboundConfig:
    (tmp_path / "pw").write_text("pec-pw")
    (tmp_path / "secret").write_text("whsec-0123456789abcdef")
    section = {"from_address": FROM, "display_name": "ACME Assistenza",
               "smtp": {"host": smtp.host, "port": smtp.port, "security": "tls",
                        "ca_file": str(smtp.ca_file), "timeout": 5},
               "retry_backoff": 30, "max_attempts": 3,
               "message_template": "<p>Gentile {{ticket.requester.name}},</p>"
                                   "{{ticket.latest_comment_html}}",
               **outbound}
    raw = {"accounts": [{"name": "pec-main", "username": FROM, "password_file": "pw",
                         "outbound": section}],
           "service": {"public_url": "https://bridge.example.it", "signing_secret_file": "secret"}}
    return outbound_from_raw(raw, str(tmp_path / "config.yaml"), tmp_path)


@dataclass
class Env:
    zendesk: FakeZendesk
    smtp: SmtpTestServer
    store: Store
    queue: OutboundQueue
    worker: OutboundWorker
    clock: Clock
    tmp_path: Path

    def webhook_job(self, ticket_id: int = 4711, key: str = "inv:1") -> int:
        return self.queue.enqueue("pec-main", ticket_id, source="webhook",
                                  dedupe_key=key).job_id

    def new_worker(self, **outbound: Any) -> OutboundWorker:
        config = outbound_config(self.tmp_path, self.smtp, **outbound)
        return OutboundWorker(config, self.queue, self.worker.api, self.store, clock=self.clock,
                              sleep=self.clock.sleep)


@pytest.fixture
def env(tmp_path: Path, smtp: SmtpTestServer, zendesk: FakeZendesk,
        target: StoreTarget) -> Iterator[Env]:
    """The worker with its store and queue on each engine (SQLite file, PostgreSQL)."""
    clock = Clock()
    adapter = ZendeskAdapter(
        ZendeskSettings(base_url=BASE, auth=ApiTokenAuth("agent@example.it", "tok"),
                        max_attempts=2, max_backoff=0.01),
        sleep=lambda _s: None)
    store = target.store()
    queue = target.queue(clock)
    worker = OutboundWorker(outbound_config(tmp_path, smtp), queue, ZendeskOutboundAPI(adapter),
                            store, clock=clock, sleep=clock.sleep)
    zendesk.add_ticket(4711, "POSTA CERTIFICATA: Richiesta certificato", 501,
                       tags=("pmb_pec_main", PENDING_TAG, "pec_connector"))
    zendesk.add_comment(4711, 501, "Vorrei il certificato.")
    zendesk.add_comment(4711, 100, "Ecco il certificato richiesto.",
                        html="<p>Ecco il <b>certificato</b> richiesto.</p>",
                        files=(("certificato.pdf", "application/pdf", PDF),))
    store.map_message_ids(4711, ["m1@customer.example.it"], direction="in", account="pec-main")
    store.map_message_ids(4711, ["opec275.20260101@pec.aruba.it"], direction="in",
                          account="pec-main")
    yield Env(zendesk, smtp, store, queue, worker, clock, tmp_path)


@pytest.fixture(autouse=True)
def _no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert "unexpected error" not in caplog.text, caplog.text


def only_note(env: Env, ticket_id: int = 4711) -> dict[str, Any]:
    (note,) = env.zendesk.notes(ticket_id)
    return note


def test_reply_is_sent_recorded_and_noted(env: Env) -> None:
    job_id = env.webhook_job()
    assert env.worker.run_once() == 1
    (got,) = env.smtp.received
    assert got.tls and got.login == FROM and got.mail_from == FROM
    assert got.rcpt_tos == (REQUESTER,)
    msg = got.message()
    assert msg["From"] == f"ACME Assistenza <{FROM}>"
    assert msg["To"] == f"Mario Rossi <{REQUESTER}>"
    assert msg["Subject"] == "Richiesta certificato [#4711]"  # PEC prefix dropped, ref added
    assert msg["In-Reply-To"] == "<opec275.20260101@pec.aruba.it>"
    assert msg["References"] == "<m1@customer.example.it> <opec275.20260101@pec.aruba.it>"
    html_part = msg.get_body(("html",)).get_content()
    assert "Gentile Mario Rossi" in html_part and "<b>certificato</b>" in html_part
    assert "Ecco il certificato richiesto." in msg.get_body(("plain",)).get_content()
    (attachment,) = msg.iter_attachments()
    assert attachment.get_filename() == "certificato.pdf" and attachment.get_content() == PDF

    job = env.queue.job(job_id)
    assert job.state == JobState.SENT and job.reported and job.attempts == 1
    assert msg["Message-ID"] == f"<{job.message_id}>"
    assert env.store.is_own_message_id(job.message_id)
    assert env.store.ticket_for_message_ids([job.message_id]) == "4711"

    note = only_note(env)
    assert f"Sent by PEC from pec-main ({FROM}) to {REQUESTER}" in note["plain_body"]
    assert f"<{job.message_id}>" in note["plain_body"]
    tags = env.zendesk.ticket_tags(4711)
    assert "pec_sent" in tags and PENDING_TAG not in tags and REPLY_TAG not in tags
    # The file came from storage without Zendesk credentials.
    (download,) = [c for c in env.zendesk.calls if c.path.startswith("/tok")]
    assert "Authorization" not in download.headers
    assert FILES  # the redirect target host of the fake


def test_temporary_smtp_error_then_success(env: Env) -> None:
    env.smtp.fail_next("451 4.3.0 Try again later")
    job_id = env.webhook_job()
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.QUEUED and "451" in job.error
    assert job.next_attempt_at == env.clock.now + 30
    assert env.smtp.received == [] and env.zendesk.notes(4711) == []
    first_id = job.message_id
    assert env.worker.run_once() == 0  # not yet due
    env.clock.now += 31
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.SENT and job.attempts == 2 and job.message_id == first_id
    assert len(env.smtp.received) == 1
    assert "Sent by PEC" in only_note(env)["plain_body"]


def test_permanent_smtp_error_is_reported_not_sent(env: Env) -> None:
    env.smtp.fail_next("550 5.7.1 Indirizzo IP bloccato temporaneamente per sospetto abuso")
    job_id = env.webhook_job()
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.FAILED and job.attempts == 1 and job.reported
    assert env.smtp.received == []
    note = only_note(env)["plain_body"]
    assert "PEC NOT sent" in note and "550 5.7.1 Indirizzo IP bloccato" in note
    tags = env.zendesk.ticket_tags(4711)
    assert "pec_send_failed" in tags and "pec_sent" not in tags and PENDING_TAG not in tags
    env.clock.now += 10_000
    assert env.worker.run_once() == 0  # never retried


def test_temporary_errors_until_max_attempts_fail(env: Env) -> None:
    env.smtp.fail_next("421 4.7.0 busy", times=3)
    job_id = env.webhook_job()
    for _ in range(3):
        env.worker.run_once()
        env.clock.now += 3600
    job = env.queue.job(job_id)
    assert job.state == JobState.FAILED and "gave up after 3 attempts" in job.error
    assert env.smtp.received == []
    assert "421 4.7.0 busy" in only_note(env)["plain_body"]


def test_crlf_in_the_ticket_title_is_refused(env: Env) -> None:
    env.zendesk.tickets[4711]["subject"] = "Richiesta\r\nBcc: victim@example.it"
    job_id = env.webhook_job()
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.FAILED and "line break" in job.error
    assert env.smtp.received == []
    assert "subject: contains a line break" in only_note(env)["plain_body"]


def test_injected_requester_address_is_refused(env: Env) -> None:
    env.zendesk.users[501]["email"] = f"{REQUESTER}\nBcc: victim@example.it"
    env.webhook_job()
    env.worker.run_once()
    assert env.smtp.received == []
    assert "to: contains a line break" in only_note(env)["plain_body"]


def test_recipient_from_a_ticket_field(env: Env) -> None:
    env.zendesk.tickets[4711]["custom_fields"] = [{"id": 360001,
                                                   "value": "avvocato@pec.example.it"}]
    worker = env.new_worker(recipient_field_id=360001)
    env.webhook_job()
    worker.run_once()
    (got,) = env.smtp.received
    assert got.rcpt_tos == ("avvocato@pec.example.it",)
    assert got.message()["To"] == "avvocato@pec.example.it"


def test_internal_notes_are_never_sent(env: Env) -> None:
    env.zendesk.add_comment(4711, 100, "Nota interna: cliente difficile", public=False)
    env.webhook_job()
    env.worker.run_once()
    body = env.smtp.received[0].message().get_body(("plain",)).get_content()
    assert "Ecco il certificato" in body and "cliente difficile" not in body


def test_automatic_answer_with_a_fixed_text(env: Env) -> None:
    # Use case 1: a trigger adds the reply tag to tickets from PEC senders on an ordinary
    # mailbox; the template is a fixed text, no comment is quoted.
    worker = env.new_worker(message_template="Questa segnalazione non può essere presa in "
                            "carico.\nScrivere a {{account.from_address}}.",
                            subject_template="Re: {{ticket.title}}")
    env.webhook_job()
    worker.run_once()
    msg = env.smtp.received[0].message()
    assert msg["Subject"] == "Re: Richiesta certificato [#4711]"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == (
        f"Questa segnalazione non può essere presa in carico.\nScrivere a {FROM}.\n")


def test_reply_comment_any_sends_the_latest_comment(env: Env) -> None:
    env.zendesk.add_comment(4711, 100, "Risposta scritta come nota interna", public=False)
    worker = env.new_worker(reply_comment="any")
    env.webhook_job()
    worker.run_once()
    body = env.smtp.received[0].message().get_body(("plain",)).get_content()
    assert "Risposta scritta come nota interna" in body


def test_attachments_can_be_left_out(env: Env) -> None:
    worker = env.new_worker(include_attachments=False)
    env.webhook_job()
    worker.run_once()
    assert list(env.smtp.received[0].message().iter_attachments()) == []


def test_webhook_and_sweep_for_one_comment_send_once(env: Env) -> None:
    env.webhook_job(key="inv:1")
    env.webhook_job(key="inv:2")  # the request arrived twice under two invocations
    env.queue.enqueue("pec-main", 4711, source="sweep", dedupe_key="sweep:x")
    env.worker.run_once()
    assert len(env.smtp.received) == 1
    states = sorted(j.state.value for j in env.queue.jobs())
    assert states == ["sent", "skipped", "skipped"]
    notes = [n["plain_body"] for n in env.zendesk.notes(4711)]
    assert sum("Sent by PEC" in n for n in notes) == 1
    # The report removed the tags: the late copies are not requests any more.
    assert sum("not sent again" in n for n in notes) == 0


def test_an_agent_asking_again_for_a_sent_comment_is_told_on_the_ticket(env: Env) -> None:
    env.webhook_job(key="inv:1")
    env.worker.run_once()
    env.zendesk.tickets[4711]["tags"].append(PENDING_TAG)  # the macro applied once more
    env.webhook_job(key="inv:2")
    env.worker.run_once()
    assert len(env.smtp.received) == 1
    notes = [n["plain_body"] for n in env.zendesk.notes(4711)]
    assert sum("not sent again" in n for n in notes) == 1


def test_a_signed_webhook_for_a_ticket_without_the_accounts_tag_sends_nothing(
        env: Env) -> None:
    """Issue 12: a webhook call for a ticket never tagged for that account's replies was sent
    by PEC. The worker re-reads the ticket; without this account's reply or pending tag (here:
    another account's tag) the job is skipped and nothing is sent."""
    env.zendesk.tickets[4711]["tags"] = ["pmb_pec_main", "pec_connector_reply_other_pending"]
    job_id = env.webhook_job()
    env.worker.run_once()
    assert env.smtp.received == []
    job = env.queue.job(job_id)
    assert job is not None and job.state.value == "skipped"
    assert "pec_connector_reply_pec_main" in (job.error or "")


def test_sweep_finds_lost_requests(env: Env) -> None:
    env.zendesk.add_ticket(4800, "Nuova PEC proattiva", 501, tags=(REPLY_TAG,))
    env.zendesk.add_comment(4800, 100, "Comunicazione importante.")
    env.zendesk.add_ticket(4801, "Altro", 501, tags=("unrelated",))
    assert env.worker.sweep() == 2  # 4711 (pending: its webhook never came) and 4800
    assert env.worker.sweep() == 0  # already queued
    env.worker.run_once()
    assert sorted(m.message()["Subject"] for m in env.smtp.received) == [
        "Nuova PEC proattiva [#4800]", "Richiesta certificato [#4711]"]
    assert REPLY_TAG not in env.zendesk.ticket_tags(4800)
    assert env.worker.sweep() == 0  # the tags are gone


def test_sweep_leaves_fresh_tickets_to_the_webhook(env: Env) -> None:
    env.clock.now = T0 + 30
    assert env.worker.sweep() == 0


def test_sweep_job_does_nothing_when_the_tag_is_gone(env: Env) -> None:
    env.zendesk.tickets[4711]["tags"] = ["pmb_pec_main"]
    job_id = env.queue.enqueue("pec-main", 4711, source="sweep", dedupe_key="s").job_id
    env.worker.run_once()
    assert env.queue.job(job_id).state == JobState.SKIPPED and env.smtp.received == []


def test_accepted_job_is_sent_after_a_crash_once(env: Env) -> None:
    crashed = process_owner("crashed")
    job_id = env.webhook_job()
    assert env.queue.claim_next(crashed, 600).id == job_id  # died while reading Zendesk
    env.worker.run_once()
    assert len(env.smtp.received) == 1 and env.queue.job(job_id).state == JobState.SENT
    env.worker.run_once()
    assert len(env.smtp.received) == 1


def test_crash_during_smtp_is_reported_uncertain_and_not_resent(env: Env) -> None:
    crashed = process_owner("crashed")
    job_id = env.webhook_job()
    env.queue.claim_next(crashed, 600)
    env.queue.begin_send(job_id, crashed, message_id="pmb.x.1@pec.example.it",
                         recipient=REQUESTER, subject="Richiesta certificato [#4711]")
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.UNCERTAIN and job.reported
    assert env.smtp.received == []
    note = only_note(env)["plain_body"]
    assert "outcome UNKNOWN" in note and "<pmb.x.1@pec.example.it>" in note
    assert f"outbound retry {job_id}" in note
    assert "pec_send_uncertain" in env.zendesk.ticket_tags(4711)
    # The operator decides to send it again: same Message-ID, so it is recognisably one message.
    env.queue.requeue(job_id)
    env.worker.run_once()
    (got,) = env.smtp.received
    assert got.message()["Message-ID"] == "<pmb.x.1@pec.example.it>"
    assert env.queue.job(job_id).state == JobState.SENT


def test_connection_lost_after_data_is_uncertain(env: Env) -> None:
    env.smtp.fail_next("drop")
    job_id = env.webhook_job()
    env.worker.run_once()
    assert env.queue.job(job_id).state == JobState.UNCERTAIN
    env.clock.now += 10_000
    env.worker.run_once()
    assert env.smtp.received == []


def test_provider_rate_limit_is_respected(env: Env) -> None:
    worker = env.new_worker(rate_limit_per_minute=2)
    for n in range(3):
        env.zendesk.add_ticket(5000 + n, f"Pratica {n}", 501, tags=(PENDING_TAG,))
        env.zendesk.add_comment(5000 + n, 100, f"Risposta {n}")
        env.queue.enqueue("pec-main", 5000 + n, source="webhook", dedupe_key=f"inv:{n}")
    worker.run_once()
    assert len(env.smtp.received) == 2
    assert worker._idle_wait(env.clock.now + 600) >= 1.0  # it sleeps, no busy loop
    env.clock.now += 60.5
    worker.run_once()
    assert len(env.smtp.received) == 3


def test_note_failure_is_retried_without_sending_again(env: Env) -> None:
    for _ in range(2):
        env.zendesk.fail_next("PUT", r"/api/v2/tickets/4711$", 503,
                              {"error": "unavailable", "description": "maintenance"})
    job_id = env.webhook_job()
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.SENT and not job.reported and "503" in job.report_error
    env.clock.now += 31
    env.worker.run_once()
    assert env.queue.job(job_id).reported
    assert len(env.smtp.received) == 1
    assert "Sent by PEC" in only_note(env)["plain_body"]


def test_unknown_ticket_fails_clearly(env: Env) -> None:
    job_id = env.webhook_job(ticket_id=999)
    env.worker.run_once()
    job = env.queue.job(job_id)
    assert job.state == JobState.FAILED and "999" in job.error and job.reported
    assert job.report_error  # the ticket is not there to take a note either


def test_the_worker_outlives_a_store_it_cannot_reach(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL out of reach for a while (failover, a network cut): reading when the next
    job is due fails, and the worker waits and reads again instead of ending."""
    import threading

    from connector.errors import StoreUnavailableError

    failures = {"left": 2}
    real = env.queue.next_due_at
    waits: list[float] = []

    def unreachable() -> float | None:
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailableError("the PostgreSQL store (host=db) failed: refused")
        env.worker.stop()  # read again after the failures: enough
        return real()

    monkeypatch.setattr(env.queue, "next_due_at", unreachable)
    monkeypatch.setattr(env.worker.wake, "wait", lambda seconds: waits.append(seconds))
    thread = threading.Thread(target=env.worker.run_forever)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and failures["left"] == 0 and len(waits) == 3
