"""Webhook signatures and the WSGI endpoint, called in-process (no server)."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.outbound.queue import JobState, OutboundQueue
from connector.outbound.settings import OutboundConfig, outbound_from_raw
from connector.outbound.webhook import WebhookApp
from connector.outbound.zendesk_hook import ZendeskHook
from connector.outbound.zendesk_signature import format_timestamp, sign, verify

SECRET = "whsec-0123456789abcdef"
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
# Zendesk signs test deliveries (before a webhook exists) with this fixed secret.
ZENDESK_TEST_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="


def config(tmp_path: Path, **service: Any) -> OutboundConfig:
    raw = {
        "accounts": [{"name": "pec-main", "username": "assistenza@pec.example.it",
                      "password_file": str(tmp_path / "pw"),
                      "outbound": {"provider": "aruba"}}],
        "service": {"public_url": "https://bridge.example.it", "signing_secret_file":
                    str(tmp_path / "secret"), "max_body_bytes": 2048, **service},
    }
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "secret").write_text(SECRET)
    return outbound_from_raw(raw, str(tmp_path / "config.yaml"), tmp_path)


@pytest.fixture
def queue(tmp_path: Path) -> OutboundQueue:
    q = OutboundQueue(tmp_path / "b.sqlite3", clock=lambda: NOW.timestamp())
    yield q
    q.close()


@pytest.fixture
def app(tmp_path: Path, queue: OutboundQueue) -> WebhookApp:
    return WebhookApp(config(tmp_path), queue, ZendeskHook(), clock=lambda: NOW.timestamp())


def body_for(ticket_id: Any = "4711", **extra: Any) -> bytes:
    return json.dumps({"ticket_id": ticket_id, "account": "pec-main", "v": 1,
                       "subject": "Re: Richiesta", "message": "<p>ok</p>", **extra}).encode()


def call(app: WebhookApp, *, method: str = "POST", path: str = "/hooks/zendesk/pec-main",
         body: bytes = b"", headers: dict[str, str] | None = None,
         content_length: str | None = None) -> tuple[int, dict[str, Any]]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path,
                               "REMOTE_ADDR": "203.0.113.9", "wsgi.input": io.BytesIO(body),
                               "CONTENT_LENGTH": content_length if content_length is not None
                               else str(len(body))}
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, head: list[tuple[str, str]]) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(head)

    data = b"".join(app(environ, start_response))
    return seen["status"], json.loads(data)


def signed(body: bytes, *, secret: str = SECRET, when: datetime = NOW,
           invocation: str | None = "01HINVOCATION0001") -> dict[str, str]:
    ts = format_timestamp(when)
    headers = {"X-Zendesk-Webhook-Signature": sign(secret, ts, body),
               "X-Zendesk-Webhook-Signature-Timestamp": ts,
               "X-Zendesk-Webhook-Id": "01HWEBHOOK"}
    if invocation:
        headers["X-Zendesk-Webhook-Invocation-Id"] = invocation
    return headers


# -- signatures ----------------------------------------------------------------------------------

def test_signature_matches_zendesk_recipe() -> None:
    # base64(HMAC-SHA256(secret, timestamp + body)), computed independently of sign().
    import base64
    import hashlib
    import hmac

    ts, body = "2021-03-25T05:09:27Z", b'{"ticket_id":"1"}'
    expected = base64.b64encode(hmac.new(ZENDESK_TEST_SECRET.encode(), ts.encode() + body,
                                         hashlib.sha256).digest()).decode()
    assert sign(ZENDESK_TEST_SECRET, ts, body) == expected
    when = datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)
    assert verify([ZENDESK_TEST_SECRET], expected, ts, body, now=when, tolerance=300)
    assert not verify([ZENDESK_TEST_SECRET], expected, ts, body + b" ", now=when, tolerance=300)
    late = verify([ZENDESK_TEST_SECRET], expected, ts, body, now=when + timedelta(seconds=301),
                  tolerance=300)
    assert not late and "away from now" in late.reason
    assert verify(["other-secret-xxxxxxxx", ZENDESK_TEST_SECRET], expected, ts, body, now=when,
                  tolerance=300)
    assert not verify([ZENDESK_TEST_SECRET], None, ts, body, now=when, tolerance=300)
    assert not verify([ZENDESK_TEST_SECRET], expected, "yesterday", body, now=when,
                      tolerance=300)


# -- the endpoint -------------------------------------------------------------------------------

def test_signed_request_is_queued_and_answered_202(app: WebhookApp,
                                                   queue: OutboundQueue) -> None:
    body = body_for()
    status, answer = call(app, body=body, headers=signed(body))
    assert status == 202 and answer["duplicate"] is False
    job = queue.job(answer["job"])
    assert (job.account, job.ticket_id, job.source, job.state) == \
        ("pec-main", "4711", "webhook", JobState.QUEUED)
    assert job.dedupe_key == "inv:01HINVOCATION0001"
    assert job.payload["invocation_id"] == "01HINVOCATION0001"
    assert job.payload["subject"] == "Re: Richiesta"


def test_same_invocation_twice_is_one_job(app: WebhookApp, queue: OutboundQueue) -> None:
    body = body_for()
    first = call(app, body=body, headers=signed(body))[1]
    # Zendesk's retry: same invocation, new timestamp and signature.
    retry = signed(body, when=NOW + timedelta(seconds=20))
    status, second = call(app, body=body, headers=retry)
    assert status == 202 and second == {"job": first["job"], "duplicate": True}
    assert len(queue.jobs()) == 1


def test_replayed_delivery_with_another_invocation_id_is_a_duplicate(
        app: WebhookApp, queue: OutboundQueue) -> None:
    body = body_for()
    headers = signed(body)
    first = call(app, body=body, headers=headers)[1]
    headers["X-Zendesk-Webhook-Invocation-Id"] = "01HFORGED"
    status, second = call(app, body=body, headers=headers)
    assert status == 202 and second["duplicate"] and second["job"] == first["job"]
    assert len(queue.jobs()) == 1


def test_without_invocation_id_the_signed_delivery_is_the_key(app: WebhookApp,
                                                              queue: OutboundQueue) -> None:
    body = body_for()
    status, answer = call(app, body=body, headers=signed(body, invocation=None))
    assert status == 202 and queue.job(answer["job"]).dedupe_key.startswith("sig:")


@pytest.mark.parametrize("tamper", ["secret", "body", "stale", "future", "missing", "garbage"])
def test_bad_signatures_get_401_and_the_body_is_not_logged(
        app: WebhookApp, queue: OutboundQueue, caplog: pytest.LogCaptureFixture,
        tamper: str) -> None:
    body = body_for(message="riservatissimo-contenuto")
    headers = {
        "secret": lambda: signed(body, secret="wrong-secret-0123456789"),
        "body": lambda: signed(body_for(ticket_id="1")),
        "stale": lambda: signed(body, when=NOW - timedelta(minutes=6)),
        "future": lambda: signed(body, when=NOW + timedelta(minutes=6)),
        "missing": lambda: {},
        "garbage": lambda: {"X-Zendesk-Webhook-Signature": "###",
                            "X-Zendesk-Webhook-Signature-Timestamp": "soon"},
    }[tamper]()
    with caplog.at_level(logging.INFO):
        status, answer = call(app, body=body, headers=headers)
    assert status == 401 and answer == {"error": "unauthorized"}
    assert queue.jobs() == []
    assert "unauthorized" in caplog.text and "203.0.113.9" in caplog.text
    assert "riservatissimo" not in caplog.text


def test_unknown_account_is_unauthorized(app: WebhookApp, queue: OutboundQueue) -> None:
    body = body_for()
    status, _ = call(app, path="/hooks/zendesk/other", body=body, headers=signed(body))
    assert status == 401 and queue.jobs() == []


def test_secret_zendesk_chose_is_accepted(app: WebhookApp, queue: OutboundQueue) -> None:
    queue.set_webhook_secret("pec-main", "W1", "zendesk-chosen-secret-99")
    body = body_for()
    status, _ = call(app, body=body, headers=signed(body, secret="zendesk-chosen-secret-99"))
    assert status == 202


def test_oversized_body_is_refused_before_reading(app: WebhookApp,
                                                  queue: OutboundQueue) -> None:
    body = body_for(message="x" * 5000)
    status, answer = call(app, body=body, headers=signed(body))
    assert status == 413 and queue.jobs() == []
    # A body without Content-Length is read only up to the cap.
    status, _ = call(app, body=body, headers=signed(body), content_length="")
    assert status == 413


def test_account_mismatch_and_missing_ticket(app: WebhookApp, queue: OutboundQueue) -> None:
    body = json.dumps({"ticket_id": "4711", "account": "someone-else"}).encode()
    assert call(app, body=body, headers=signed(body))[0] == 400
    body = json.dumps({"ticket_id": "", "account": "pec-main"}).encode()
    assert call(app, body=body, headers=signed(body))[0] == 400
    assert queue.jobs() == []


def test_broken_json_from_unescaped_placeholders_still_yields_the_ticket(
        app: WebhookApp, queue: OutboundQueue) -> None:
    body = b'{"ticket_id":"4711","account":"pec-main","message":"<p class="zd">He said "hi"</p>"}'
    status, answer = call(app, body=body, headers=signed(body))
    assert status == 202 and queue.job(answer["job"]).ticket_id == "4711"


def test_routes_methods_and_health(app: WebhookApp) -> None:
    assert call(app, method="GET", path="/healthz") == (200, {"status": "ok", "jobs": {}})
    assert call(app, method="GET")[0] == 405
    assert call(app, method="POST", path="/other")[0] == 404
    assert call(app, method="POST", path="/healthz")[0] == 405


def test_prefixed_public_path_is_routed(app: WebhookApp) -> None:
    body = body_for()
    status, _ = call(app, path="/bridge/hooks/zendesk/pec-main", body=body, headers=signed(body))
    assert status == 202


def test_enqueue_wakes_the_worker(tmp_path: Path, queue: OutboundQueue) -> None:
    woken: list[bool] = []
    app = WebhookApp(config(tmp_path), queue, ZendeskHook(), clock=lambda: NOW.timestamp(),
                     on_enqueued=lambda: woken.append(True))
    body = body_for()
    call(app, body=body, headers=signed(body))
    call(app, body=body, headers=signed(body))
    assert woken == [True]


# -- issue 12: the account is verified, bad ids and bodies get 400 -----------------------------

def two_account_app(tmp_path: Path, queue: OutboundQueue) -> WebhookApp:
    raw = {
        "accounts": [{"name": name, "username": f"{name}@pec.example.it",
                      "password_file": str(tmp_path / "pw"), "outbound": {"provider": "aruba"}}
                     for name in ("pec-main", "pec-legal")],
        "service": {"public_url": "https://bridge.example.it", "signing_secret_file":
                    str(tmp_path / "secret"), "max_body_bytes": 2048},
    }
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "secret").write_text(SECRET)
    cfg = outbound_from_raw(raw, str(tmp_path / "config.yaml"), tmp_path)
    return WebhookApp(cfg, queue, ZendeskHook(), clock=lambda: NOW.timestamp())


def test_a_delivery_signed_for_one_account_cannot_be_replayed_to_another(
        tmp_path: Path, queue: OutboundQueue) -> None:
    """Zendesk signs the body, not the URL: the signed body names the account, and a request
    whose URL names another one is refused, so a captured delivery cannot make another
    account send."""
    app = two_account_app(tmp_path, queue)
    body = body_for()  # account pec-main
    status, answer = call(app, path="/hooks/zendesk/pec-legal", body=body, headers=signed(body))
    assert (status, answer) == (400, {"error": "account mismatch"})
    assert queue.jobs() == []
    status, _ = call(app, path="/hooks/zendesk/pec-main", body=body, headers=signed(body))
    assert status == 202


def test_a_signed_body_without_its_account_is_refused(app: WebhookApp,
                                                      queue: OutboundQueue) -> None:
    body = json.dumps({"ticket_id": "4711", "v": 1}).encode()
    status, answer = call(app, body=body, headers=signed(body))
    assert (status, answer) == (400, {"error": "account missing or invalid"})
    assert queue.jobs() == []


@pytest.mark.parametrize("ticket_id", ["1" * 30, 10**30, "9223372036854775808", "-5", "0",
                                       "12a", 4.5, True, "٤٧", None, [], {"id": 1}])
def test_bad_ticket_ids_get_400_never_5xx(app: WebhookApp, queue: OutboundQueue,
                                          ticket_id: Any) -> None:
    """A 30-digit ticket_id used to give 503, which Zendesk retries for ever."""
    body = body_for(ticket_id)
    status, answer = call(app, body=body, headers=signed(body))
    assert status == 400, answer
    assert queue.jobs() == []


@pytest.mark.parametrize("body", [
    b'{"ticket_id": "111111111111111111111111111111", "account": "pec-main", "message": "a"b"}',
    b"[" * 1020 + b"]" * 1020,  # deeper than the JSON parser recurses, under the size cap
    b"\xff\xfe\x00garbage",
    b'"just a string"',
    b"",
    b'{"ticket_id": "4711", "account": "PEC-MAIN"}',
    b'{"ticket_id": "4711", "account": ["pec-main"]}',
], ids=["broken-json-30-digits", "deep-nesting", "not-utf8", "json-string", "empty",
        "upper-case-account", "account-list"])
def test_bad_bodies_get_400_never_5xx(app: WebhookApp, queue: OutboundQueue,
                                      body: bytes) -> None:
    status, _ = call(app, body=body, headers=signed(body))
    assert status == 400
    assert queue.jobs() == []


def test_the_largest_ticket_id_is_accepted(app: WebhookApp, queue: OutboundQueue) -> None:
    body = body_for(str(2**63 - 1))
    status, answer = call(app, body=body, headers=signed(body))
    assert status == 202
    assert queue.job(answer["job"]).ticket_id == str(2**63 - 1)


def test_the_webhook_serves_only_its_hosts_route(app: WebhookApp, queue: OutboundQueue) -> None:
    """Each host's requests are verified its own way: a Zendesk deployment has no OTOBO
    invoker route, so the shared secret as a Basic-auth password queues nothing there."""
    import base64

    auth = base64.b64encode(f"postmaster-bridge:{SECRET}".encode()).decode()
    body = json.dumps({"Event": "TicketDynamicFieldUpdate_PECReply", "TicketID": "7"}).encode()
    status, _ = call(app, path="/hooks/otobo/pec-main", body=body,
                     headers={"Authorization": f"Basic {auth}"})
    assert status == 404
    assert queue.jobs() == []
