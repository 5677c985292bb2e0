"""ZendeskAdapter against `responses` mocks whose bodies validate against Zendesk's OAS.

Every mocked answer goes through ``mock()``, which checks it with tests/zendesk_oas.py first
(success bodies against the operation's schema, error bodies against Zendesk's error shapes),
and the JSON bodies the adapter sends are checked against the request schemas. Without the OAS
(bare clone) ``mock()`` lets its answers through unchecked (``check_fake``: they are built by
the resource builders CI validates) and the tests that check what the adapter sent are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers
from zendesk_double import (
    attachment_resource,
    closed_ticket_error,
    error_body,
    iso,
    ticket_resource,
    user_resource,
)
from zendesk_oas import check_fake, validate_error, validate_request, validate_response

from connector.errors import PermanentHostError, TicketClosedError, TransientHostError
from connector.hosts.base import Comment, HostAdapter, NewTicket, Upload
from connector.hosts.ratelimit import Rate
from connector.hosts.retry import RetriesExhausted, SlidingWindowLimiter, parse_retry_after
from connector.hosts.zendesk import (
    DEDUPE_METADATA_KEY,
    ApiTokenAuth,
    OAuthClientCredentials,
    PreparedRequest,
    StalePreparedRequest,
    TicketNotFoundError,
    ZendeskAdapter,
    ZendeskSettings,
    rewrite_cid_references,
    ticket_fingerprint,
)

BASE = "https://acme.zendesk.com"
CLIENT_SECRET = "s3cr3t-client-Zq9"
API_TOKEN = "tok-legacy-9f8e7d"
T0 = 1_790_000_000.0  # wall clock of the tests (2026)


class FakeTime:
    """Injected clock and sleep: sleeping advances the clock, nothing really waits."""

    def __init__(self) -> None:
        self.now = 5_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def oauth_settings(**kw: Any) -> ZendeskSettings:
    auth = OAuthClientCredentials("pmb-client", CLIENT_SECRET, "tickets:read tickets:write", 3600)
    values: dict[str, Any] = {"base_url": BASE, "auth": auth, "max_attempts": 4,
                              "max_backoff": 30.0}
    values.update(kw)
    return ZendeskSettings(**values)


def token_settings(**kw: Any) -> ZendeskSettings:
    return oauth_settings(auth=ApiTokenAuth("agent@acme.example", API_TOKEN), **kw)


def make(ft: FakeTime, settings: ZendeskSettings | None = None, **kw: Any) -> ZendeskAdapter:
    return ZendeskAdapter(settings or oauth_settings(), sleep=ft.sleep, clock=ft.clock,
                          wall_clock=ft.wall, **kw)


# -- mocks built from Zendesk shapes -----------------------------------------------------------


def mock(rsps: responses.RequestsMock, method: str, path: str, status: int, body: Any = None,
         headers: dict[str, str] | None = None, match: tuple[Any, ...] = ()) -> None:
    """Register an answer after checking it is one Zendesk could give."""
    template = path.split("?")[0]
    if status >= 400:
        check_fake(validate_error, body)
    else:
        check_fake(validate_response, method, template, status, body)
    kwargs: dict[str, Any] = {"status": status, "headers": headers or {}, "match": list(match)}
    if body is None:
        kwargs["body"] = b""
    else:
        kwargs["json"] = body
    rsps.add(method, BASE + path, **kwargs)


def token_answer(token: str = "at-1", expires_in: int = 3600) -> dict[str, Any]:
    return {"access_token": token, "token_type": "bearer", "scope": "tickets:read tickets:write",
            "expires_in": expires_in}


def ticket(tid: int = 4711, **kw: Any) -> dict[str, Any]:
    stored = {"id": tid, "created_at": T0, "updated_at": T0 + 60, "subject": "Richiesta",
              "status": "open", "requester_id": 501, "tags": ["pmb_acct1"],
              "external_id": "pmb:acct1:<m1@example.it>"}
    stored.update(kw)
    return ticket_resource(stored, BASE)


def user(uid: int, email: str, name: str = "Mario Rossi", role: str = "end-user") -> dict:
    return user_resource({"id": uid, "name": name, "email": email, "role": role,
                          "created_at": T0}, BASE)


def upload_answer(token: str, att_id: int, name: str, ctype: str, size: int,
                  with_attachment: bool = True) -> dict[str, Any]:
    if not with_attachment:
        return {"upload": {"token": token}}
    att = attachment_resource({"id": att_id, "file_name": name, "content_type": ctype,
                               "size": size, "token": f"att{att_id}"}, BASE)
    return {"upload": {"token": token, "attachment": att, "attachments": [att]}}


def sent_json(call: Any) -> Any:
    return json.loads(call.request.body)


def calls(rsps: responses.RequestsMock, method: str, path: str) -> list[Any]:
    return [c for c in rsps.calls
            if c.request.method == method and urlsplit(c.request.url).path == path]


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n"


def new_ticket(**kw: Any) -> NewTicket:
    values: dict[str, Any] = dict(
        subject="Richiesta documentazione",
        requester_email="mario.rossi@pec.example.it",
        requester_name="Mario Rossi",
        body_text="Buongiorno, allego il modulo.",
        body_html='<p>Buongiorno,</p><p><img src="cid:logo@pec.example.it" alt="logo"></p>',
        uploads=(Upload("modulo.pdf", "application/pdf", PDF),
                 Upload("logo.png", "image/png", PNG, content_id="logo@pec.example.it")),
        tags=("pmb_acct1", "pec"),
        # The account's defaults and the filters' controls, in the control vocabulary.
        defaults=(("X-OTOBO-Priority", "normal"), ("X-OTOBO-State", "new"),
                  ("X-OTOBO-Type", "question"), ("X-OTOBO-Queue", "123")),
        controls=(("X-OTOBO-Brand", "456"), ("X-OTOBO-DynamicField-7890", "<m1@example.it>")),
        email_ccs=("ufficio@example.it",),
        external_id="pmb:acct1:<m1@example.it>",
        idempotency_key="pmb:acct1:3b1f0c",
    )
    values.update(kw)
    return NewTicket(**values)


def mock_uploads(rsps: responses.RequestsMock, with_attachment: bool = True) -> None:
    mock(rsps, "POST", "/api/v2/uploads", 201,
         upload_answer("tokPdf", 9001, "modulo.pdf", "application/pdf", len(PDF)),
         match=(matchers.query_param_matcher({"filename": "modulo.pdf"}),))
    mock(rsps, "POST", "/api/v2/uploads", 201,
         upload_answer("tokPng", 9002, "logo.png", "image/png", len(PNG), with_attachment),
         match=(matchers.query_param_matcher({"filename": "logo.png"}),))


def created(tid: int = 4711) -> dict[str, Any]:
    return {"ticket": ticket(tid, status="new")}


# -- create ------------------------------------------------------------------------------------


def test_adapter_implements_the_protocol(ft: FakeTime) -> None:
    assert isinstance(make(ft), HostAdapter)


def test_create_names_the_recipient_address_and_brand(rsps, ft) -> None:
    """Replies and notifications go out from the address the customer wrote to."""
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 201, created(),
         headers={"x-idempotency-lookup": "miss"})

    make(ft).create_ticket(NewTicket(subject="Fattura", requester_email="a@example.it",
                                     requester_name="A", body_text="ciao",
                                     recipient="billing@acme.example",
                                     controls=(("X-OTOBO-Brand", "360001"),)))

    body = sent_json(calls(rsps, "POST", "/api/v2/tickets")[0])
    validate_request("POST", "/api/v2/tickets", body)  # both are writable on create
    assert body["ticket"]["recipient"] == "billing@acme.example"
    assert body["ticket"]["brand_id"] == 360001


def test_an_empty_attachment_is_named_not_uploaded(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "miss"})

    make(ft).create_ticket(NewTicket(subject="Vuoto", requester_email="a@example.it",
                                     requester_name="A", body_text="allegato vuoto",
                                     uploads=(Upload("vuoto.txt", "text/plain", b""),)))

    assert calls(rsps, "POST", "/api/v2/uploads") == []
    body = sent_json(calls(rsps, "POST", "/api/v2/tickets")[0])["ticket"]["comment"]
    assert "uploads" not in body
    assert "Not attached, empty (0 bytes): vuoto.txt" in (body.get("body") or body.get("html_body"))


def test_create_uploads_files_rewrites_inline_image_and_sends_key(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps)
    mock(rsps, "POST", "/api/v2/tickets", 201, created(),
         headers={"x-idempotency-lookup": "miss", "Location": f"{BASE}/api/v2/tickets/4711.json"})

    result = make(ft).create_ticket(new_ticket())

    assert result.id == "4711" and result.replayed is False
    uploads = calls(rsps, "POST", "/api/v2/uploads")
    assert [c.request.headers["Content-Type"] for c in uploads] == ["application/pdf", "image/png"]
    assert [c.request.body for c in uploads] == [PDF, PNG]
    assert "token" not in parse_qs(urlsplit(uploads[1].request.url).query)  # one token per file
    (post,) = calls(rsps, "POST", "/api/v2/tickets")
    assert post.request.headers["Idempotency-Key"] == "pmb:acct1:3b1f0c"
    assert post.request.headers["Authorization"] == "Bearer at-1"
    body = sent_json(post)
    validate_request("POST", "/api/v2/tickets", body)
    t = body["ticket"]
    png_url = f"{BASE}/attachments/token/att9002/?name=logo.png"
    assert t["comment"] == {
        "html_body": f'<p>Buongiorno,</p><p><img src="{png_url}" alt="logo"></p>',
        "public": True,
        "uploads": ["tokPdf", "tokPng"],
    }
    assert t["requester"] == {"name": "Mario Rossi", "email": "mario.rossi@pec.example.it"}
    assert t["email_ccs"] == [{"user_email": "ufficio@example.it", "action": "put"}]
    assert t["custom_fields"] == [{"id": 7890, "value": "<m1@example.it>"}]
    assert (t["tags"], t["priority"], t["status"], t["type"]) == (
        ["pmb_acct1", "pec"], "normal", "new", "question")
    assert (t["group_id"], t["brand_id"], t["external_id"]) == (
        123, 456, "pmb:acct1:<m1@example.it>")
    assert "via_followup_source_id" not in t


def test_inline_image_without_content_url_stays_a_plain_attachment(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps, with_attachment=False)
    mock(rsps, "POST", "/api/v2/tickets", 201, created())

    make(ft).create_ticket(new_ticket())

    comment = sent_json(calls(rsps, "POST", "/api/v2/tickets")[0])["ticket"]["comment"]
    assert 'src="cid:logo@pec.example.it"' in comment["html_body"]
    assert comment["uploads"] == ["tokPdf", "tokPng"]


def test_plain_text_follow_up_ticket_as_internal_note(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 201, created(4800))
    nt = new_ticket(body_html=None, uploads=(), public=False, follows_up="4711",
                    requester_name="", idempotency_key=None)

    assert make(ft).create_ticket(nt).id == "4800"

    post = calls(rsps, "POST", "/api/v2/tickets")[0]
    assert "Idempotency-Key" not in post.request.headers
    t = sent_json(post)["ticket"]
    validate_request("POST", "/api/v2/tickets", sent_json(post))
    assert t["comment"] == {"body": "Buongiorno, allego il modulo.", "public": False}
    assert t["via_followup_source_id"] == 4711
    assert t["requester"]["name"] == "mario.rossi"  # Zendesk needs a name for a new user


def test_retry_after_500_resends_byte_identical_body_without_new_uploads(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps)
    mock(rsps, "POST", "/api/v2/tickets", 500, error_body("InternalError", "Oops"))
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "hit"})

    result = make(ft).create_ticket(new_ticket())

    assert result.replayed is True
    first, second = calls(rsps, "POST", "/api/v2/tickets")
    assert first.request.body == second.request.body
    assert first.request.headers["Idempotency-Key"] == second.request.headers["Idempotency-Key"]
    assert len(calls(rsps, "POST", "/api/v2/uploads")) == 2
    assert len(ft.sleeps) == 1 and 0 <= ft.sleeps[0] <= 30.0


def test_second_create_with_same_key_reuses_the_cached_body(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps)
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "miss"})
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "hit"})
    adapter = make(ft)

    assert adapter.create_ticket(new_ticket()).replayed is False
    assert adapter.create_ticket(new_ticket()).replayed is True

    first, second = calls(rsps, "POST", "/api/v2/tickets")
    assert first.request.body == second.request.body
    assert len(calls(rsps, "POST", "/api/v2/uploads")) == 2


def test_create_times_out_then_succeeds(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    rsps.add("POST", BASE + "/api/v2/tickets", body=requests.ReadTimeout("read timed out"))
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "hit"})

    result = make(ft).create_ticket(new_ticket(uploads=()))

    assert result == type(result)(id="4711", replayed=True)
    assert len(calls(rsps, "POST", "/api/v2/tickets")) == 2


def test_create_without_key_is_not_resent_after_a_timeout(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    rsps.add("POST", BASE + "/api/v2/tickets", body=requests.ReadTimeout("read timed out"))

    with pytest.raises(TransientHostError, match="timed out"):
        make(ft).create_ticket(new_ticket(uploads=(), idempotency_key=None))
    assert len(calls(rsps, "POST", "/api/v2/tickets")) == 1


def test_prepared_request_survives_a_restart_byte_for_byte(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps)
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "hit"})
    persisted: list[str] = []
    prepared = make(ft, on_prepared=lambda p: persisted.append(p.to_json())).prepare_ticket(
        new_ticket())
    assert persisted == [prepared.to_json()]
    assert prepared.upload_tokens == ("tokPdf", "tokPng")

    after_restart = make(ft)  # a new process: nothing cached
    restored = after_restart.prepared_from_json(persisted[0])
    result = after_restart.send_prepared(restored)

    assert restored == prepared and result.replayed is True
    assert calls(rsps, "POST", "/api/v2/tickets")[0].request.body == prepared.body
    assert len(calls(rsps, "POST", "/api/v2/uploads")) == 2  # only the first process uploaded
    assert PreparedRequest.from_dict(json.loads(prepared.to_json())) == prepared


def test_stale_prepared_request_looks_up_external_id_then_prepares_again(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer(expires_in=172_800))
    mock_uploads(rsps)
    mock(rsps, "GET", "/api/v2/tickets", 200, {"tickets": [], "next_page": None,
                                               "previous_page": None, "count": 0})
    mock(rsps, "POST", "/api/v2/tickets", 201, created(), headers={"x-idempotency-lookup": "miss"})
    adapter = make(ft)
    nt = new_ticket()
    prepared = adapter.prepare_ticket(nt)
    ft.now += 51 * 60  # upload tokens live 60 minutes

    with pytest.raises(StalePreparedRequest):
        adapter.send_prepared(prepared)
    result = adapter.send_prepared(prepared, nt)

    assert result.id == "4711"
    lookups = calls(rsps, "GET", "/api/v2/tickets")
    assert parse_qs(urlsplit(lookups[-1].request.url).query)["external_id"] == [
        "pmb:acct1:<m1@example.it>"]
    assert len(calls(rsps, "POST", "/api/v2/uploads")) == 4
    (post,) = calls(rsps, "POST", "/api/v2/tickets")
    assert post.request.headers["Idempotency-Key"] == "pmb:acct1:3b1f0c#g1"


def test_stale_prepared_request_finds_the_ticket_an_earlier_attempt_created(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer(expires_in=172_800))
    mock_uploads(rsps)
    mock(rsps, "GET", "/api/v2/tickets", 200, {"tickets": [ticket(4711)], "next_page": None,
                                               "previous_page": None, "count": 1})
    adapter = make(ft)
    prepared = adapter.prepare_ticket(new_ticket())
    ft.now += 115 * 60

    assert adapter.send_prepared(prepared).replayed is True
    assert calls(rsps, "POST", "/api/v2/tickets") == []


def test_idempotency_conflict_falls_back_to_external_id(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 400, error_body(
        "IdempotentRequestError", "Request parameters don't match the given idempotency key"))
    mock(rsps, "GET", "/api/v2/tickets", 200, {"tickets": [ticket(4711)], "next_page": None,
                                               "previous_page": None, "count": 1})

    result = make(ft).create_ticket(new_ticket(uploads=()))

    assert (result.id, result.replayed) == ("4711", True)
    assert len(calls(rsps, "POST", "/api/v2/tickets")) == 1


def test_rejected_upload_token_prepares_again_under_a_new_key(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock_uploads(rsps)
    mock(rsps, "POST", "/api/v2/tickets", 422, error_body(
        "RecordInvalid", "Record validation errors",
        {"uploads": [{"description": "Upload token tokPdf is invalid or expired",
                      "error": "InvalidValue"}]}))
    mock(rsps, "GET", "/api/v2/tickets", 200, {"tickets": [], "next_page": None,
                                               "previous_page": None, "count": 0})
    mock(rsps, "POST", "/api/v2/tickets", 201, created())

    assert make(ft).create_ticket(new_ticket()).id == "4711"
    keys = [c.request.headers["Idempotency-Key"] for c in calls(rsps, "POST", "/api/v2/tickets")]
    assert keys == ["pmb:acct1:3b1f0c", "pmb:acct1:3b1f0c#g1"]


def test_oversized_upload_is_skipped_with_a_note(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 201, created())
    big = Upload("scan.tiff", "image/tiff", b"x" * 2048)

    make(ft, oauth_settings(upload_max_bytes=1024)).create_ticket(
        new_ticket(uploads=(big,), body_html=None))

    assert calls(rsps, "POST", "/api/v2/uploads") == []
    comment = sent_json(calls(rsps, "POST", "/api/v2/tickets")[0])["ticket"]["comment"]
    assert "scan.tiff (2048 bytes)" in comment["body"] and "uploads" not in comment


# -- auth --------------------------------------------------------------------------------------


def test_oauth_token_is_fetched_once_and_renewed_before_expiry(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-1", 3600))
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-2", 3600))
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})
    adapter = make(ft)

    adapter.get_ticket("4711")
    ft.now += 3000  # 600 s left: more than 10% and 60 s
    adapter.get_ticket("4711")
    ft.now += 250  # 350 s left: under 10% of 3600
    adapter.get_ticket("4711")

    (first, second) = calls(rsps, "POST", "/oauth/tokens")
    assert sent_json(first) == {"grant_type": "client_credentials", "client_id": "pmb-client",
                                "client_secret": CLIENT_SECRET,
                                "scope": "tickets:read tickets:write", "expires_in": 3600}
    auths = [c.request.headers["Authorization"] for c in calls(rsps, "GET", "/api/v2/tickets/4711")]
    assert auths == ["Bearer at-1", "Bearer at-1", "Bearer at-2"]


def test_oauth_401_renews_the_token_once_and_retries(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-1"))
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-2"))
    me = {"user": user(100, "agent@acme.example", "Bridge Bot", "admin")}
    mock(rsps, "GET", "/api/v2/users/me", 200, me)
    mock(rsps, "GET", "/api/v2/users/me", 401, {"error": "Couldn't authenticate you"})
    mock(rsps, "GET", "/api/v2/users/me", 200, me)
    adapter = make(ft)

    adapter.check_credentials()  # caches at-1, which Zendesk then revokes
    assert adapter.check_credentials() == "Bridge Bot <agent@acme.example> (admin)"

    auths = [c.request.headers["Authorization"] for c in calls(rsps, "GET", "/api/v2/users/me")]
    assert auths == ["Bearer at-1", "Bearer at-1", "Bearer at-2"]
    assert ft.sleeps == []


def test_a_fresh_token_refused_is_permanent(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-1"))
    mock(rsps, "GET", "/api/v2/users/me", 401, {"error": "Couldn't authenticate you"})

    with pytest.raises(PermanentHostError, match="401 Couldn't authenticate you"):
        make(ft).check_credentials()
    assert len(calls(rsps, "POST", "/oauth/tokens")) == 1


def test_oauth_client_refused_is_permanent_and_names_zendesk_reason(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 401, {"error": "invalid_client", "error_description":
                                              "Client authentication failed"})

    with pytest.raises(PermanentHostError, match="invalid_client; Client authentication failed"):
        make(ft).get_ticket("1")


def test_legacy_api_token_uses_basic_auth(rsps, ft) -> None:
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    make(ft, token_settings()).get_ticket("4711")

    header = rsps.calls[0].request.headers["Authorization"]
    assert header == "Basic " + base64.b64encode(
        f"agent@acme.example/token:{API_TOKEN}".encode()).decode()
    assert calls(rsps, "POST", "/oauth/tokens") == []


def test_secrets_never_reach_logs_or_errors(rsps, ft, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer("at-secret-token-77"))
    mock(rsps, "GET", "/api/v2/tickets/1", 500, error_body("InternalError", "boom"))
    mock(rsps, "GET", "/api/v2/users/me", 403, {"error": "Forbidden",
                                                 "description": "You do not have access"})
    adapter = make(ft)
    errors = []
    for call in (lambda: adapter.get_ticket("1"), adapter.check_credentials):
        with pytest.raises(Exception) as info:
            call()
        errors.append(str(info.value))
    legacy = make(ft, token_settings())
    mock(rsps, "GET", "/api/v2/tickets/2", 404, error_body("RecordNotFound", "Not found"))
    legacy.get_ticket("2")

    text = caplog.text + " ".join(errors) + repr(adapter.settings) + repr(legacy.settings)
    assert "WARNING" in caplog.text  # retries were logged, so logs were really looked at
    for secret in (CLIENT_SECRET, "at-secret-token-77", API_TOKEN, "Bearer", "Basic "):
        assert secret not in text


def test_an_id_zendesk_cannot_have_is_no_ticket_and_no_request(rsps, ft) -> None:
    """Ticket ids are opaque text outside the adapter; a subject pattern may find text that is
    no Zendesk id: no ticket, and nothing is asked (rsps fails on any unmocked request)."""
    adapter = make(ft)
    assert adapter.get_ticket("REQ-12") is None and adapter.get_ticket("0") is None
    with pytest.raises(PermanentHostError):
        adapter.add_comment(Comment(ticket_id="REQ-12", body_text="x"))


# -- retries -----------------------------------------------------------------------------------


def test_429_waits_the_retry_after_seconds(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 429,
         error_body("APIRateLimitExceeded", "Rate limit exceeded"), headers={"Retry-After": "7"})
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    assert make(ft).get_ticket("4711").id == "4711"
    assert ft.sleeps == [7.0]


def test_requests_are_paced_to_the_rate_zendesk_announces(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    for _ in range(12):
        mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()},
             headers={"X-Rate-Limit": "120", "X-Rate-Limit-Remaining": "100"})
    adapter = make(ft)

    for _ in range(12):
        adapter.get_ticket("4711")
    assert adapter.pacer.rate == Rate(120)
    # The first answer announces 120/min: the 11 calls after it take slots 0.515 s apart (97 %
    # of the plan), less the burst allowance (1.2 slots at 1 % of 120) a quiet pacer grants.
    interval = 60 / (120 * 0.97)
    assert sum(ft.sleeps) == pytest.approx((11 - 1 - 1.2) * interval, rel=0.01)


def test_a_429_pauses_the_next_requests_of_every_caller(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 429,
         error_body("APIRateLimitExceeded", "Rate limit exceeded"), headers={"Retry-After": "45"})
    adapter = make(ft, oauth_settings(max_backoff=30.0))
    with pytest.raises(TransientHostError):
        adapter.get_ticket("4711")  # deferred: Retry-After beyond max_backoff
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    other = threading.Thread(target=adapter.get_ticket, args=(4711,))
    other.start()  # another worker, a moment later, waits the pause out
    other.join()
    assert ft.sleeps == [pytest.approx(45.0)]


def test_ticket_updates_have_their_own_budget(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    for _ in range(4):
        mock(rsps, "PUT", "/api/v2/tickets/4711", 200, update_answer())
    adapter = make(ft, oauth_settings(ticket_update_rate_limit=Rate(100)))

    for n in range(4):
        adapter.add_comment(Comment(ticket_id="4711", body_text=f"reply {n}"))
    assert adapter.pacer.rate is None  # no general budget announced or configured
    # The first two go at once (the burst allowance), the others 0.62 s apart.
    assert sum(ft.sleeps) == pytest.approx(2 * 60 / (100 * 0.97), rel=0.01)


def test_503_retry_after_is_honoured_too(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 503, error_body("ServiceUnavailable", "Maintenance"),
         headers={"Retry-After": "12"})
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    make(ft).get_ticket("4711")
    assert ft.sleeps == [12.0]


def test_retry_after_beyond_max_backoff_defers_to_the_next_poll(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 429,
         error_body("APIRateLimitExceeded", "Rate limit exceeded"), headers={"Retry-After": "600"})

    with pytest.raises(TransientHostError) as info:
        make(ft).get_ticket("4711")
    assert info.value.retry_after == 600.0 and info.value.status == 429
    assert ft.sleeps == []


def test_500_then_success(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 500, error_body("InternalError", "Oops"))
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    assert make(ft).get_ticket("4711").status == "open"
    assert len(ft.sleeps) == 1 and 0 <= ft.sleeps[0] <= 30.0


def test_timeout_then_success(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    rsps.add("GET", BASE + "/api/v2/tickets/4711", body=requests.Timeout("timed out"))
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket()})

    assert make(ft).get_ticket("4711").id == "4711"
    assert len(calls(rsps, "GET", "/api/v2/tickets/4711")) == 2


def test_409_is_retried(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "PUT", "/api/v2/tickets/4711/tags", 409,
         error_body("UpdateConflict", "Safe Update prevented the update"))
    mock(rsps, "PUT", "/api/v2/tickets/4711/tags", 200, {"tags": ["pmb_acct1", "x"]})

    make(ft).add_tags(4711, ["x"])
    assert len(calls(rsps, "PUT", "/api/v2/tickets/4711/tags")) == 2


def test_gives_up_after_max_attempts_with_a_transient_error(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 502, error_body("BadGateway", "Bad Gateway"))

    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts") as info:
        make(ft).get_ticket("4711")
    assert isinstance(info.value, TransientHostError) and info.value.status == 502
    assert len(calls(rsps, "GET", "/api/v2/tickets/4711")) == 4
    assert len(ft.sleeps) == 3


def test_permanent_422_carries_zendesk_error_text_and_is_not_retried(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/tickets", 422, error_body(
        "RecordInvalid", "Record validation errors",
        {"requester": [{"description": "Requester: Email is not properly formatted",
                        "error": "InvalidValue"}]}))

    with pytest.raises(PermanentHostError) as info:
        make(ft).create_ticket(new_ticket(uploads=()))
    message = str(info.value)
    assert "HTTP 422" in message and "RecordInvalid" in message
    assert "requester: Requester: Email is not properly formatted" in message
    assert info.value.status == 422 and not isinstance(info.value, TicketClosedError)
    assert len(calls(rsps, "POST", "/api/v2/tickets")) == 1


# -- comments ------------------------------------------------------------------------------------


def comment(**kw: Any) -> Comment:
    values: dict[str, Any] = dict(ticket_id="4711", body_text="Grazie, ecco la ricevuta.",
                                  body_html="<p>Grazie, ecco la ricevuta.</p>", public=True,
                                  author_email="Mario.Rossi@pec.example.it",
                                  uploads=(Upload("ricevuta.pdf", "application/pdf", PDF),),
                                  defaults=(("X-OTOBO-FollowUp-State", "open"),),
                                  controls=(("X-OTOBO-FollowUp-Priority", "4 high"),),
                                  add_tags=("pec_reply",),
                                  remove_tags=("pmb_acct1",), dedupe_key="dk-42")
    values.update(kw)
    return Comment(**values)


def update_answer(tid: int = 4711, **kw: Any) -> dict[str, Any]:
    return {"ticket": ticket(tid, **kw), "audit": {
        "id": 77001, "ticket_id": tid, "author_id": 100, "created_at": iso(T0 + 120),
        "metadata": {"custom": {DEDUPE_METADATA_KEY: "dk-42"}, "system": {}},
        "events": [{"id": 77002, "type": "Comment", "body": "Grazie, ecco la ricevuta."},
                   {"id": 77003, "type": "Change", "field_name": "status", "value": "open"}]}}


def users_found(*users: dict[str, Any]) -> dict[str, Any]:
    return {"users": list(users), "next_page": None, "previous_page": None, "count": len(users)}


def test_comment_with_author_tags_status_and_dedupe_metadata(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "POST", "/api/v2/uploads", 201,
         upload_answer("tokRic", 9100, "ricevuta.pdf", "application/pdf", len(PDF)))
    mock(rsps, "GET", "/api/v2/users/search", 200,
         users_found(user(501, "mario.rossi@pec.example.it")),
         match=(matchers.query_param_matcher({"query": "email:mario.rossi@pec.example.it"}),))
    mock(rsps, "GET", "/api/v2/tickets/4711", 200,
         {"ticket": ticket(tags=["pmb_acct1", "pec"], status="pending")})
    mock(rsps, "PUT", "/api/v2/tickets/4711", 200, update_answer(tags=["pec", "pec_reply"]))

    make(ft).add_comment(comment())

    (put,) = calls(rsps, "PUT", "/api/v2/tickets/4711")
    body = sent_json(put)
    validate_request("PUT", "/api/v2/tickets/4711", body)
    assert body == {"ticket": {
        "comment": {"html_body": "<p>Grazie, ecco la ricevuta.</p>", "public": True,
                    "uploads": ["tokRic"], "author_id": 501},
        "status": "open",
        "priority": "high",
        "metadata": {DEDUPE_METADATA_KEY: "dk-42"},
        "tags": ["pec", "pec_reply"],
        "safe_update": True,
        "updated_stamp": iso(T0 + 60),
    }}


def test_comment_without_tag_changes_sends_no_tags_and_unknown_author_is_omitted(rsps, ft):
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/users/search", 200, users_found())
    mock(rsps, "PUT", "/api/v2/tickets/4711", 200, update_answer())

    make(ft).add_comment(comment(uploads=(), add_tags=(), remove_tags=(), body_html=None,
                                 public=False, defaults=(), controls=()))

    body = sent_json(calls(rsps, "PUT", "/api/v2/tickets/4711")[0])
    validate_request("PUT", "/api/v2/tickets/4711", body)
    assert body == {"ticket": {"comment": {"body": "Grazie, ecco la ricevuta.", "public": False},
                               "metadata": {DEDUPE_METADATA_KEY: "dk-42"}}}
    assert calls(rsps, "GET", "/api/v2/tickets/4711") == []


def test_author_lookups_are_cached(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/users/search", 200,
         users_found(user(501, "mario.rossi@pec.example.it")))
    mock(rsps, "PUT", "/api/v2/tickets/4711", 200, update_answer())
    adapter = make(ft)
    simple = comment(uploads=(), add_tags=(), remove_tags=())

    adapter.add_comment(simple)
    adapter.add_comment(simple)
    assert adapter.user_exists("MARIO.ROSSI@pec.example.it")

    assert len(calls(rsps, "GET", "/api/v2/users/search")) == 1


def test_safe_update_conflict_rereads_the_ticket(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket(updated_at=T0 + 60)})
    mock(rsps, "GET", "/api/v2/tickets/4711", 200,
         {"ticket": ticket(updated_at=T0 + 90, tags=["pmb_acct1", "vip"])})
    mock(rsps, "PUT", "/api/v2/tickets/4711", 409,
         error_body("UpdateConflict", "Safe Update prevented the update due to outdated data"))
    mock(rsps, "PUT", "/api/v2/tickets/4711", 200, update_answer())

    make(ft).add_comment(comment(uploads=(), author_email=None, dedupe_key=None))

    first, second = (sent_json(c)["ticket"] for c in calls(rsps, "PUT", "/api/v2/tickets/4711"))
    assert first["updated_stamp"] == iso(T0 + 60) and first["tags"] == ["pec_reply"]
    assert second["updated_stamp"] == iso(T0 + 90) and second["tags"] == ["vip", "pec_reply"]
    assert calls(rsps, "GET", "/api/v2/tickets/4711/audits") == []  # a 409 is surely refused


def test_comment_that_landed_despite_a_timeout_is_not_sent_twice(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    rsps.add("PUT", BASE + "/api/v2/tickets/4711", body=requests.ReadTimeout("read timed out"))
    audits = {"audits": [
        {"id": 1, "ticket_id": 4711, "created_at": iso(T0), "author_id": 501,
         "metadata": {"custom": {}, "system": {}}, "events": []},
        {"id": 2, "ticket_id": 4711, "created_at": iso(T0 + 5), "author_id": 100,
         "metadata": {"custom": {DEDUPE_METADATA_KEY: "dk-42"}, "system": {}}, "events": []},
    ], "next_page": None, "previous_page": None, "count": 2}
    mock(rsps, "GET", "/api/v2/tickets/4711/audits", 200, audits)

    make(ft).add_comment(comment(uploads=(), add_tags=(), remove_tags=(), author_email=None))

    assert len(calls(rsps, "PUT", "/api/v2/tickets/4711")) == 1


def test_closed_ticket_raises_ticket_closed_error(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "PUT", "/api/v2/tickets/4711", 422, closed_ticket_error())

    with pytest.raises(TicketClosedError) as info:
        make(ft).add_comment(comment(uploads=(), add_tags=(), remove_tags=(), author_email=None))
    assert info.value.ticket_id == "4711" and isinstance(info.value, PermanentHostError)
    assert "closed prevents ticket update" in str(info.value)
    assert len(calls(rsps, "PUT", "/api/v2/tickets/4711")) == 1


def test_closed_ticket_seen_before_a_tag_change_is_not_updated(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": ticket(status="closed")})

    with pytest.raises(TicketClosedError):
        make(ft).add_comment(comment(uploads=(), author_email=None))
    assert calls(rsps, "PUT", "/api/v2/tickets/4711") == []


def test_comment_on_missing_ticket_raises_not_found(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "PUT", "/api/v2/tickets/4711", 404, error_body("RecordNotFound", "Not found"))

    with pytest.raises(TicketNotFoundError):
        make(ft).add_comment(comment(uploads=(), add_tags=(), remove_tags=(), author_email=None))


def test_comment_exists_follows_audit_pages(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    page2 = f"{BASE}/api/v2/tickets/4711/audits?page=2&per_page=1"

    def audit_page(aid: int, key: str | None, next_page: str | None) -> dict[str, Any]:
        custom = {DEDUPE_METADATA_KEY: key} if key else {}
        return {"audits": [{"id": aid, "ticket_id": 4711, "created_at": iso(T0 + aid),
                            "author_id": 100, "metadata": {"custom": custom, "system": {}},
                            "events": []}],
                "next_page": next_page, "previous_page": None, "count": 2}

    mock(rsps, "GET", "/api/v2/tickets/4711/audits", 200, audit_page(1, None, page2),
         match=(matchers.query_param_matcher({}),))
    mock(rsps, "GET", "/api/v2/tickets/4711/audits", 200, audit_page(2, "dk-42", None),
         match=(matchers.query_param_matcher({"page": "2", "per_page": "1"}),))
    adapter = make(ft)

    assert adapter.comment_exists(4711, "dk-42") is True
    assert adapter.comment_exists(4711, "dk-other") is False


def test_pagination_never_follows_links_off_the_zendesk_host(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/4711/audits", 200, {
        "audits": [], "next_page": "https://evil.example/api/v2/x", "previous_page": None,
        "count": 0})

    with pytest.raises(PermanentHostError, match="off the Zendesk host"):
        make(ft).comment_exists(4711, "dk")


# -- reads and tags -----------------------------------------------------------------------------


def test_get_ticket_404_is_none(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "GET", "/api/v2/tickets/999", 404, error_body("RecordNotFound", "Not found"))

    assert make(ft).get_ticket("999") is None
    assert ft.sleeps == []


def test_get_and_find_map_sideloaded_users(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    t = ticket(4711, email_cc_ids=[502], tags=["pmb_acct1", "pec"])
    people = [user(501, "mario.rossi@pec.example.it"), user(502, "ufficio@example.it", "Ufficio")]
    mock(rsps, "GET", "/api/v2/tickets/4711", 200, {"ticket": t, "users": people},
         match=(matchers.query_param_matcher({"include": "users"}),))
    mock(rsps, "GET", "/api/v2/tickets", 200, {"tickets": [t], "users": people,
                                               "next_page": None, "previous_page": None,
                                               "count": 1},
         match=(matchers.query_param_matcher({"external_id": "pmb:acct1:<m1@example.it>",
                                              "include": "users"}),))
    adapter = make(ft)

    info = adapter.get_ticket("4711")
    assert info is not None
    assert (info.status, info.requester_email, info.cc_emails, info.tags, info.external_id) == (
        "open", "mario.rossi@pec.example.it", ("ufficio@example.it",), ("pmb_acct1", "pec"),
        "pmb:acct1:<m1@example.it>")
    assert adapter.find_tickets_by_external_id("pmb:acct1:<m1@example.it>") == [info]


def test_add_and_remove_tags(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "PUT", "/api/v2/tickets/4711/tags", 200, {"tags": ["pmb_acct1", "pec_sent"]})
    mock(rsps, "DELETE", "/api/v2/tickets/4711/tags", 204)
    adapter = make(ft)

    adapter.add_tags(4711, ["pec_sent"])
    adapter.remove_tags(4711, ["pec_pending"])
    adapter.add_tags(4711, [])

    assert sent_json(calls(rsps, "PUT", "/api/v2/tickets/4711/tags")[0]) == {"tags": ["pec_sent"]}
    assert sent_json(calls(rsps, "DELETE", "/api/v2/tickets/4711/tags")[0]) == {
        "tags": ["pec_pending"]}
    assert len(calls(rsps, "PUT", "/api/v2/tickets/4711/tags")) == 1


def test_tags_on_a_closed_ticket_raise_ticket_closed(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer())
    mock(rsps, "PUT", "/api/v2/tickets/4711/tags", 422, closed_ticket_error())

    with pytest.raises(TicketClosedError):
        make(ft).add_tags(4711, ["x"])


def test_per_ticket_update_limit_waits_before_the_31st_update(rsps, ft) -> None:
    mock(rsps, "POST", "/oauth/tokens", 201, token_answer(expires_in=172_800))
    mock(rsps, "PUT", "/api/v2/tickets/4711/tags", 200, {"tags": ["x"]})
    mock(rsps, "PUT", "/api/v2/tickets/4712/tags", 200, {"tags": ["x"]})
    adapter = make(ft)
    start = ft.now

    for i in range(30):
        ft.now = start + i  # one update a second
        adapter.add_tags(4711, ["x"])
    adapter.add_tags(4712, ["x"])  # another ticket has its own window
    assert ft.sleeps == []

    adapter.add_tags(4711, ["x"])

    assert ft.sleeps == [pytest.approx(600 - 29)]
    assert len(calls(rsps, "PUT", "/api/v2/tickets/4711/tags")) == 31


def test_check_credentials_on_anonymous_answer_is_permanent(rsps, ft) -> None:
    anonymous = {"user": {"name": "Anonymous user", "role": "end-user"}}
    mock(rsps, "GET", "/api/v2/users/me", 200, anonymous)

    with pytest.raises(PermanentHostError, match="anonymous"):
        make(ft, token_settings()).check_credentials()


def test_redirect_is_not_followed(rsps, ft) -> None:
    rsps.add("GET", BASE + "/api/v2/tickets/1", status=301,
             headers={"Location": "https://acme.zendesk.com.evil.example/api/v2/tickets/1"})

    with pytest.raises(PermanentHostError, match="check base_url"):
        make(ft, token_settings()).get_ticket("1")
    assert len(rsps.calls) == 1


# -- pure helpers ----------------------------------------------------------------------------------


def test_rewrite_cid_references() -> None:
    html = ('<img src="cid:a@b"><img src=\'CID:%3Cc%40d%3E\'><img src="cid:unknown">'
            'text mentioning cid:a@b too')
    out = rewrite_cid_references(html, {"a@b": "https://x/1?name=a&b", "c@d": "https://x/2"})
    assert out == ('<img src="https://x/1?name=a&amp;b"><img src=\'https://x/2\'>'
                   '<img src="cid:unknown">text mentioning https://x/1?name=a&amp;b too')


def test_parse_retry_after() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 23 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_sliding_window_limiter() -> None:
    ft = FakeTime()
    limiter = SlidingWindowLimiter(2, 10.0, clock=ft.clock, sleep=ft.sleep)
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.wait_needed("a") == 10.0 and limiter.wait_needed("b") == 0
    ft.now += 4
    assert limiter.acquire("a") == pytest.approx(6.0)
    assert ft.sleeps == [pytest.approx(6.0)]


def test_settings_validation() -> None:
    from connector.errors import ConfigError

    with pytest.raises(ConfigError):
        ZendeskSettings("acme.zendesk.com", ApiTokenAuth("a@b.c", "t"))
    with pytest.raises(ConfigError):
        oauth_settings(auth=OAuthClientCredentials("c", "s", "read", 60))
    assert ZendeskSettings(BASE + "/", ApiTokenAuth("a@b.c", "t")).base_url == BASE


def test_a_known_upload_digest_is_used_and_fingerprints_the_same() -> None:
    data = b"%PDF-1.4 body"
    digest = hashlib.sha256(data).hexdigest()
    known = Upload("a.pdf", "application/pdf", data, known_sha256=digest)
    computed = Upload("a.pdf", "application/pdf", data)
    assert known.sha256 == computed.sha256 == digest
    assert known == computed  # the digest is a cache, not part of the upload's identity

    def ticket(upload: Upload) -> NewTicket:
        return NewTicket(subject="s", requester_email="a@example.org", requester_name="A",
                         body_text="b", uploads=(upload,))

    assert ticket_fingerprint(ticket(known)) == ticket_fingerprint(ticket(computed))
    # The digest given is trusted (it comes from the parse of the same bytes).
    assert Upload("a.pdf", "application/pdf", data, known_sha256="f" * 64).sha256 == "f" * 64
