"""The Zendesk test double: its answers match the OAS, it keeps Zendesk's idempotency rules and
its state across restarts, and the real adapter works against it over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from zendesk_double import ZendeskDouble, main
from zendesk_oas import validate_error, validate_request, validate_response

from connector.errors import PermanentHostError, TicketClosedError
from connector.hosts.base import Comment, NewTicket, Upload
from connector.hosts.zendesk import DEDUPE_METADATA_KEY, ApiTokenAuth, ZendeskAdapter

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 64


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory):
    with ZendeskDouble(tmp_path_factory.mktemp("zd") / "state.json") as zd:
        yield zd


@pytest.fixture
def zd(double: ZendeskDouble) -> ZendeskDouble:
    double.reset()
    return double


@pytest.fixture
def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


class Sleeper:
    """Injected sleep: records, and moves the double's clock instead of waiting."""

    def __init__(self, zd: ZendeskDouble | None = None) -> None:
        self.zd = zd
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.zd is not None and seconds >= 1:
            self.zd.advance_clock(seconds)


def adapter_for(zd: ZendeskDouble, kind: str = "oauth", sleep: Any = None,
                **overrides: Any) -> ZendeskAdapter:
    session = requests.Session()
    session.trust_env = False
    return ZendeskAdapter(zd.settings(kind, **overrides), session=session,
                          sleep=sleep or Sleeper())


def bearer(zd: ZendeskDouble, http: requests.Session) -> dict[str, str]:
    resp = http.post(zd.url + "/oauth/tokens", json={
        "grant_type": "client_credentials", "client_id": zd.client_id,
        "client_secret": zd.client_secret, "scope": "read write", "expires_in": 3600})
    assert resp.status_code == 201
    validate_response("POST", "/oauth/tokens", 201, resp.json())
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def new_ticket(**kw: Any) -> NewTicket:
    values: dict[str, Any] = dict(
        subject="Ricevuta di accettazione", requester_email="mario.rossi@pec.example.it",
        requester_name="Mario Rossi", body_text="Testo",
        body_html='<p>Testo</p><img src="cid:img1@x">',
        uploads=(Upload("daticert.xml", "application/xml", b"<postacert/>"),
                 Upload("logo.png", "image/png", PNG, content_id="img1@x")),
        tags=("pmb_acct1",), external_id="pmb:acct1:<m1@x>", idempotency_key="key-1",
        controls=(("X-OTOBO-DynamicField-7890", "<m1@x>"),), email_ccs=("cc@example.it",))
    values.update(kw)
    return NewTicket(**values)


# -- the double's own behaviour -----------------------------------------------------------------


def test_every_answer_matches_the_oas(zd: ZendeskDouble, http: requests.Session) -> None:
    auth = bearer(zd, http)
    u = zd.url

    def check(method: str, path: str, status: int, resp: requests.Response,
              body: Any = None) -> Any:
        assert resp.status_code == status, resp.text
        data = resp.json() if resp.content else None
        if body is not None:
            validate_request(method, path, body)
        if status >= 400:
            validate_error(data)
        else:
            validate_response(method, path, status, data)
        return data

    me = check("GET", "/api/v2/users/me", 200, http.get(u + "/api/v2/users/me", headers=auth))
    assert me["user"]["role"] == "admin"
    up = check("POST", "/api/v2/uploads", 201, http.post(
        u + "/api/v2/uploads", params={"filename": "a.png"}, data=PNG,
        headers={**auth, "Content-Type": "image/png"}))
    up2 = check("POST", "/api/v2/uploads", 201, http.post(
        u + "/api/v2/uploads", params={"filename": "b.txt", "token": up["upload"]["token"]},
        data=b"hello", headers={**auth, "Content-Type": "text/plain"}))
    assert up2["upload"]["token"] == up["upload"]["token"]
    assert len(up2["upload"]["attachments"]) == 2
    assert http.get(up["upload"]["attachment"]["content_url"]).content == PNG
    body = {"ticket": {"subject": "S", "comment": {"html_body": "<p>x</p>", "public": True,
                                                   "uploads": [up["upload"]["token"]]},
                       "requester": {"name": "Mario", "email": "mario@example.it"},
                       "tags": ["A b"], "priority": "high", "external_id": "e1",
                       "custom_fields": [{"id": 5, "value": "v"}],
                       "email_ccs": [{"user_email": "cc@example.it", "action": "put"}],
                       "metadata": {"k": "v"}}}
    created = check("POST", "/api/v2/tickets", 201,
                    http.post(u + "/api/v2/tickets", json=body, headers=auth), body)
    tid = created["ticket"]["id"]
    assert created["ticket"]["tags"] == ["a", "b"]
    check("GET", "/api/v2/tickets/{ticket_id}", 200,
          http.get(f"{u}/api/v2/tickets/{tid}", params={"include": "users"}, headers=auth))
    listed = check("GET", "/api/v2/tickets", 200, http.get(
        u + "/api/v2/tickets", params={"external_id": "e1", "include": "users"}, headers=auth))
    assert [t["id"] for t in listed["tickets"]] == [tid]
    assert {x["email"] for x in listed["users"]} == {"mario@example.it", "cc@example.it"}
    update = {"ticket": {"comment": {"body": "more", "public": False}, "status": "open",
                         "priority": "low", "tags": ["c"], "metadata": {"pmb_key": "k1"}}}
    check("PUT", "/api/v2/tickets/{ticket_id}", 200,
          http.put(f"{u}/api/v2/tickets/{tid}", json=update, headers=auth), update)
    audits = check("GET", "/api/v2/tickets/{ticket_id}/audits", 200,
                   http.get(f"{u}/api/v2/tickets/{tid}/audits", headers=auth))
    assert audits["audits"][-1]["metadata"]["custom"] == {"pmb_key": "k1"}
    comments = check("GET", "/api/v2/tickets/{ticket_id}/comments", 200,
                     http.get(f"{u}/api/v2/tickets/{tid}/comments", headers=auth))
    assert [c["public"] for c in comments["comments"]] == [True, False]
    assert len(comments["comments"][0]["attachments"]) == 2
    tags_path = f"{u}/api/v2/tickets/{tid}/tags"
    check("GET", "/api/v2/tickets/{ticket_id}/tags", 200, http.get(tags_path, headers=auth))
    check("PUT", "/api/v2/tickets/{ticket_id}/tags", 200,
          http.put(tags_path, json={"tags": ["d"]}, headers=auth))
    check("POST", "/api/v2/tickets/{ticket_id}/tags", 201,
          http.post(tags_path, json={"tags": ["e", "f"]}, headers=auth))
    check("DELETE", "/api/v2/tickets/{ticket_id}/tags", 204,
          http.delete(tags_path, json={"tags": ["e"]}, headers=auth))
    assert http.get(tags_path, headers=auth).json() == {"tags": ["f"]}
    found = check("GET", "/api/v2/users/search", 200, http.get(
        u + "/api/v2/users/search", params={"query": "email:MARIO@example.it"}, headers=auth))
    assert [x["email"] for x in found["users"]] == ["mario@example.it"]
    # Errors, in Zendesk's error shapes.
    check("GET", "", 404, http.get(f"{u}/api/v2/tickets/1", headers=auth))
    stale = {"ticket": {"comment": {"body": "x"}, "safe_update": True,
                        "updated_stamp": "2001-01-01T00:00:00Z"}}
    check("PUT", "", 409, http.put(f"{u}/api/v2/tickets/{tid}", json=stale, headers=auth))
    zd.set_status(tid, "closed")
    closed = check("PUT", "", 422, http.put(f"{u}/api/v2/tickets/{tid}", json=update,
                                            headers=auth))
    assert "closed prevents ticket update" in json.dumps(closed)
    check("GET", "", 401, http.get(u + "/api/v2/users/me",
                                   headers={"Authorization": "Bearer nope"}))
    check("POST", "", 401, http.post(u + "/oauth/tokens", json={
        "grant_type": "client_credentials", "client_id": zd.client_id,
        "client_secret": "wrong"}))


def test_idempotency_key_rules(zd: ZendeskDouble, http: requests.Session) -> None:
    auth = bearer(zd, http)
    url = zd.url + "/api/v2/tickets"
    body = json.dumps({"ticket": {"subject": "S", "comment": {"body": "x"}}}).encode()
    headers = {**auth, "Content-Type": "application/json", "Idempotency-Key": "k"}

    first = http.post(url, data=body, headers=headers)
    again = http.post(url, data=body, headers=headers)
    other = http.post(url, data=body.replace(b'"S"', b'"T"'), headers=headers)
    no_key = http.post(url, data=body, headers={**auth, "Content-Type": "application/json"})

    assert (first.status_code, first.headers["x-idempotency-lookup"]) == (201, "miss")
    assert (again.status_code, again.headers["x-idempotency-lookup"]) == (201, "hit")
    assert again.json() == first.json()
    assert other.status_code == 400 and other.json()["error"] == "IdempotentRequestError"
    assert no_key.status_code == 201 and "x-idempotency-lookup" not in no_key.headers
    assert len(zd.tickets()) == 2

    zd.advance_clock(2 * 3600 + 1)  # keys live two hours
    expired = http.post(url, data=body, headers={**bearer(zd, http),
                                                 "Content-Type": "application/json",
                                                 "Idempotency-Key": "k"})
    assert expired.headers["x-idempotency-lookup"] == "miss"
    assert expired.json()["ticket"]["id"] != first.json()["ticket"]["id"]


def test_upload_tokens_expire_and_are_single_use(zd: ZendeskDouble,
                                                 http: requests.Session) -> None:
    auth = bearer(zd, http)
    tokens = []
    for name in ("a.txt", "b.txt"):
        resp = http.post(zd.url + "/api/v2/uploads", params={"filename": name}, data=b"x",
                         headers={**auth, "Content-Type": "text/plain"})
        tokens.append(resp.json()["upload"]["token"])

    def create(token: str) -> requests.Response:
        return http.post(zd.url + "/api/v2/tickets", headers=auth, json={
            "ticket": {"subject": "S", "comment": {"body": "x", "uploads": [token]}}})

    assert create(tokens[0]).status_code == 201
    assert create(tokens[0]).status_code == 422  # consumed
    zd.advance_clock(3601)
    auth = bearer(zd, http)  # the access token expired too
    expired = create(tokens[1])
    assert expired.status_code == 422 and "upload" in expired.text.lower()
    assert len(zd.tickets()) == 1


def test_state_survives_a_crash_and_restart(tmp_path: Path, http: requests.Session) -> None:
    with ZendeskDouble(tmp_path / "state.json") as zd:
        adapter = adapter_for(zd)
        created = adapter.create_ticket(new_ticket())
        pid, port = zd.pid, zd.port
        zd.kill()
        zd.start()
        assert zd.pid != pid and zd.port == port
        # Same key, same bytes after the restart: Zendesk's answer is a replay.
        assert adapter.create_ticket(new_ticket()) == type(created)(created.id, replayed=True)
        assert [str(t["id"]) for t in zd.tickets()] == [created.id]
        info = adapter.get_ticket(created.id)
        assert info is not None and info.external_id == "pmb:acct1:<m1@x>"


def test_faults_are_counted_and_logged(zd: ZendeskDouble, http: requests.Session) -> None:
    zd.inject(r"^/api/v2/users/me$", 503, count=2, headers={"Retry-After": "3"})
    auth = bearer(zd, http)
    statuses = [http.get(zd.url + "/api/v2/users/me", headers=auth).status_code
                for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert zd.faults()[0]["hits"] == 2
    assert [r["status"] for r in zd.requests_log() if r["path"] == "/api/v2/users/me"] == [
        503, 503, 200]


def test_cli_refuses_non_loopback_addresses(tmp_path: Path) -> None:
    assert main(["--host", "0.0.0.0", "--state", str(tmp_path / "s.json")]) == 2


# -- the adapter over real HTTP -------------------------------------------------------------------


def test_adapter_creates_comments_and_tags_against_the_double(zd: ZendeskDouble) -> None:
    adapter = adapter_for(zd)
    assert adapter.check_credentials() == "Bridge Integration <integration@example.com> (admin)"

    created = adapter.create_ticket(new_ticket())
    stored = zd.ticket(created.id)
    first = stored["comments"][0]
    assert [a["file_name"] for a in first["attachments"]] == ["daticert.xml", "logo.png"]
    assert "cid:" not in first["html_body"] and "/attachments/token/" in first["html_body"]
    assert stored["custom_fields"] == [{"id": 7890, "value": "<m1@x>"}]
    assert adapter.user_exists("mario.rossi@pec.example.it")
    assert not adapter.user_exists("nobody@example.it")

    adapter.add_comment(Comment(ticket_id=created.id, body_text="Risposta",
                                author_email="mario.rossi@pec.example.it",
                                defaults=(("X-OTOBO-FollowUp-State", "open"),),
                                add_tags=("pec_reply",), remove_tags=("pmb_acct1",),
                                uploads=(Upload("r.txt", "text/plain", b"ricevuta"),),
                                dedupe_key="dk-1"))
    stored = zd.ticket(created.id)
    reply = stored["comments"][-1]
    mario = next(u for u in zd.users() if u["email"] == "mario.rossi@pec.example.it")
    assert reply["author_id"] == mario["id"] and reply["plain_body"] == "Risposta"
    assert stored["status"] == "open" and stored["tags"] == ["pec_reply"]
    assert stored["audits"][-1]["metadata"]["custom"] == {DEDUPE_METADATA_KEY: "dk-1"}
    assert adapter.comment_exists(created.id, "dk-1")
    assert not adapter.comment_exists(created.id, "dk-2")
    assert not adapter.comment_exists(999_999, "dk-1")

    adapter.add_tags(created.id, ["pec_sent"])
    adapter.remove_tags(created.id, ["pec_reply"])
    info = adapter.get_ticket(created.id)
    assert info is not None and info.tags == ("pec_sent",)
    assert info.requester_email == "mario.rossi@pec.example.it"
    assert info.cc_emails == ("cc@example.it",)
    assert adapter.get_ticket(999_999) is None
    assert [t.id for t in adapter.find_tickets_by_external_id("pmb:acct1:<m1@x>")] == [created.id]


def test_closed_ticket_then_follow_up(zd: ZendeskDouble) -> None:
    adapter = adapter_for(zd)
    created = adapter.create_ticket(new_ticket(uploads=(), body_html=None))
    zd.set_status(created.id, "closed")

    with pytest.raises(TicketClosedError) as info:
        adapter.add_comment(Comment(ticket_id=created.id, body_text="ancora io"))
    assert info.value.ticket_id == created.id

    follow = adapter.create_ticket(new_ticket(uploads=(), body_html=None, idempotency_key="k2",
                                              follows_up=created.id))
    assert zd.ticket(created.id)["followup_ids"] == [int(follow.id)]


def test_timeout_after_the_ticket_was_created_is_replayed_not_duplicated(zd: ZendeskDouble):
    adapter = adapter_for(zd, timeout=(2.0, 0.5))
    adapter.check_credentials()
    # Zendesk creates the ticket, but the answer arrives after the client gave up.
    zd.inject(r"^/api/v2/tickets$", None, method="POST", when="after", delay=1.5)

    created = adapter.create_ticket(new_ticket())

    assert created.replayed is True
    assert len(zd.tickets()) == 1
    posts = [r for r in zd.requests_log() if r["path"] == "/api/v2/tickets"]
    assert len(posts) == 2 and posts[0]["body_sha256"] == posts[1]["body_sha256"]
    assert {p["idempotency_key"] for p in posts} == {"key-1"}


def test_server_errors_and_dropped_connections_are_retried(zd: ZendeskDouble) -> None:
    sleeper = Sleeper()
    adapter = adapter_for(zd, sleep=sleeper)
    zd.inject(r"^/api/v2/uploads$", 500, count=1)
    zd.inject(r"^/api/v2/tickets$", None, method="POST", drop=True, count=1)
    zd.inject(r"^/api/v2/tickets$", 502, method="POST", count=1)

    created = adapter.create_ticket(new_ticket())

    assert created.replayed is False and len(zd.tickets()) == 1
    assert len(sleeper.sleeps) == 3
    assert len(zd.ticket(created.id)["comments"][0]["attachments"]) == 2


def test_revoked_token_is_renewed(zd: ZendeskDouble) -> None:
    adapter = adapter_for(zd)
    adapter.check_credentials()
    zd.revoke_tokens()

    adapter.check_credentials()

    oauth = [r for r in zd.requests_log() if r["path"] == "/oauth/tokens"]
    assert len(oauth) == 2


def test_legacy_token_auth_and_wrong_credentials(zd: ZendeskDouble) -> None:
    assert "(admin)" in adapter_for(zd, "api_token").check_credentials()
    wrong = adapter_for(zd, "api_token", auth=ApiTokenAuth(zd.email, "not-the-token"))
    with pytest.raises(PermanentHostError, match="401"):
        wrong.check_credentials()


def test_double_update_limit_429_is_waited_out(zd: ZendeskDouble) -> None:
    sleeper = Sleeper(zd)
    adapter = adapter_for(zd, sleep=sleeper, max_backoff=900.0)
    created = adapter.create_ticket(new_ticket(uploads=(), body_html=None))
    zd.configure(ticket_update_limit=2)

    for tag in ("a", "b", "c"):
        adapter.add_tags(created.id, [tag])

    assert zd.ticket(created.id)["tags"] == ["pmb_acct1", "a", "b", "c"]
    assert sleeper.sleeps and 590 <= sleeper.sleeps[-1] <= 601
    assert [r["status"] for r in zd.requests_log() if r["path"].endswith("/tags")] == [
        200, 200, 429, 200]
    zd.configure(ticket_update_limit=30)
