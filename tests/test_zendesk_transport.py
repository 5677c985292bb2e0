"""The Zendesk adapter's HTTP transport (connector/hosts/transport.py) against real loopback
servers: what goes on the wire, connection reuse, OAuth renewal, Retry-After, redirects,
timeouts, proxies, TLS verification, hooks and observers; and the retry helper it runs under.

The reference for "what goes on the wire" is ``requests.Session.request`` with the arguments the
adapter passed it before the transport existed: the same server records both, and the requests
must be identical (request line, header names, order and values, body).
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from dovecot import write_test_pki

from connector.config import HostConfig
from connector.errors import HostCertificateError, PermanentHostError, TransientHostError
from connector.hosts.base import Comment, NewTicket
from connector.hosts.factory import make_host
from connector.hosts.retry import RetriesExhausted, RetryPolicy, call_with_retries
from connector.hosts.transport import HostTransport
from connector.hosts.zendesk import (
    ApiTokenAuth,
    OAuthClientCredentials,
    ZendeskAdapter,
    ZendeskSettings,
)

EMAIL = "agent@acme.example"
API_TOKEN = "tok-legacy-9f8e7d"
BASIC = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
#: The helpdesk behind the proxy in the proxy tests: a loopback address nothing listens on, so a
#: request that wrongly skipped the proxy fails at once and never leaves the machine.
NOWHERE = "http://127.0.0.2:9"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


# -- a loopback server that records every request -----------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    client_port: int  # one per TCP connection

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"user": {"id": 7, "name": "Agent",
                                                         "email": EMAIL, "role": "admin"}})
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # answer only once the test ends (for timeouts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.take(Seen(self.command, self.path, list(self.headers.items()),
                                       body, self.client_address[1]))
        if answer.hang:
            self.server.released.wait(10)
            self.close_connection = True
            return
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any  # noqa: N815 - stdlib naming


class Recorder(ThreadingHTTPServer):
    """HTTP/1.1 on 127.0.0.1 (TLS with ``context``): records requests, answers from a script
    (``answer(...)``), else with ``default``."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.seen: list[Seen] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def answer(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def take(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            return self.script.popleft() if self.script else self.default

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def server() -> Iterator[Recorder]:
    with Recorder() as srv:
        yield srv


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Observer:
    """Stands in for connector.service.metrics.Metrics (the HostObserver protocol)."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, int | str]] = []
        self.retries = 0

    def observe_host_response(self, method: str, status: int | str) -> None:
        self.responses.append((method, status))

    def observe_host_retry(self) -> None:
        self.retries += 1


def plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def token_adapter(url: str, *, sleeps: list[float] | None = None,
                  session: requests.Session | None = None, **settings: Any) -> ZendeskAdapter:
    values: dict[str, Any] = {"base_url": url, "auth": ApiTokenAuth(EMAIL, API_TOKEN),
                              "max_attempts": 3}
    values.update(settings)
    record = sleeps if sleeps is not None else []
    return ZendeskAdapter(ZendeskSettings(**values), session=session or plain_session(),
                          sleep=record.append)


# -- what goes on the wire ----------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
TICKET_BODY = json.dumps({"ticket": {"subject": "Fattura n° 117 – è arrivata?",
                                     "comment": {"body": "Grazie 🙂"}}},
                         ensure_ascii=False).encode()
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4

CALLS: list[tuple[str, str, dict[str, str] | None, bytes | None, dict[str, str]]] = [
    ("GET", "/api/v2/tickets/4711", {"include": "users"}, None, {}),
    ("GET", "/api/v2/users/search", {"query": "email:mario.rossi+è@esempio.it"}, None, {}),
    ("GET", "/api/v2/tickets", {"external_id": "pmb:acct1:<m1 a&b=c/d%e@x.it>",
                                "include": "users"}, None, {}),
    ("POST", "/api/v2/tickets", None, TICKET_BODY, {**JSON, "Idempotency-Key": "pmb:a:3b1f#g1"}),
    ("PUT", "/api/v2/tickets/4711", None, TICKET_BODY, JSON),
    ("DELETE", "/api/v2/tickets/4711/tags", None, b'{"tags":["a"]}', JSON),
    ("POST", "/api/v2/uploads", {"filename": "fattura 2024 (1)+è.pdf"}, PDF,
     {"Content-Type": "application/pdf"}),
    ("POST", "/api/v2/uploads", {"filename": "empty.txt"}, b"", {"Content-Type": "text/plain"}),
    ("DELETE", "/api/v2/uploads/tok123", None, None, {}),
    ("GET", "/api/v2/tickets/4711/audits.json?page=2&per_page=100", None, None, {}),
]


@pytest.mark.parametrize("call", CALLS, ids=[f"{c[0]} {c[1]}" for c in CALLS])
def test_requests_go_out_exactly_as_session_request_sent_them(server: Recorder, call) -> None:
    method, path, params, body, headers = call
    adapter = token_adapter(server.url)
    adapter.request(method, path, params=params, data=body, headers=headers, operation="t")
    # The old path: Session.request with the arguments the adapter used to pass.
    old = plain_session()
    token_adapter(server.url, session=old)  # sets the adapter's User-Agent on the session
    old.request(method, server.url + path, params=params, data=body,
                headers={"Accept": "application/json", **headers, "Authorization": BASIC},
                timeout=(10.0, 60.0), verify=True, allow_redirects=False)
    new_seen, old_seen = server.seen
    assert (new_seen.method, new_seen.target) == (old_seen.method, old_seen.target)
    assert new_seen.headers == old_seen.headers
    assert new_seen.body == old_seen.body == (body or b"")
    assert new_seen.header("Authorization") == BASIC
    assert new_seen.header("Accept") == "application/json"
    assert new_seen.header("User-Agent") == "postmaster-bridge (+zendesk adapter)"
    assert new_seen.header("Cookie") is None


def test_upload_sends_the_file_bytes_with_its_content_type(server: Recorder) -> None:
    adapter = token_adapter(server.url)
    server.answer(Answer(201, {"upload": {"token": "up-1"}}))
    adapter.request("POST", "/api/v2/uploads", params={"filename": "scan.tiff"},
                    data=PDF, headers={"Content-Type": "image/tiff"}, operation="upload")
    (seen,) = server.seen
    assert seen.target == "/api/v2/uploads?filename=scan.tiff"
    assert seen.body == PDF
    assert seen.header("Content-Type") == "image/tiff"
    assert seen.header("Content-Length") == str(len(PDF))


@pytest.mark.parametrize("base", [
    "https://acme.zendesk.com", "https://ACME.Zendesk.com", "http://127.0.0.1:8099",
    "https://acme.zendesk.com:8443/prefix", "https://acme.zendesk.com/pre fix",
])
def test_full_url_is_what_requests_would_prepare(base: str) -> None:
    transport = HostTransport(plain_session(), base, timeout=1.0)
    cases: list[tuple[str, dict[str, str] | None]] = [
        ("/api/v2/tickets/1", None),
        ("/api/v2/tickets/1", {"include": "users"}),
        ("/api/v2/users/search", {"query": "email:a+b@x.it"}),
        ("/api/v2/uploads", {"filename": "fattura è (1) #2 ?&=%.pdf"}),
        ("/api/v2/tickets", {"external_id": "pmb:acct:<id@x>", "include": "users"}),
        ("/api/v2/tickets/1/audits.json?page=2", None),
        ("/api/v2/tickets/1/audits.json?page=2", {"per_page": "100"}),
        ("/api/v2/ticket fields/ü", None),
        ("/api/v2/search%2Fx", {"q": "a b"}),
        ("/api/v2/tickets/1", {}),
    ]
    for path, params in cases:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(base + path, params)
        assert transport.full_url(base + path, params) == prepared.url, (base, path, params)


# -- connections, cookies, redirects, timeouts --------------------------------------------------


def test_one_connection_is_kept_alive_across_calls_and_errors(server: Recorder) -> None:
    sleeps: list[float] = []
    adapter = token_adapter(server.url, sleeps=sleeps)
    server.answer(Answer(200), Answer(404, {"error": "RecordNotFound"}),
                  Answer(500, {"error": "boom"}), Answer(200), Answer(201, {"upload": {}}))
    adapter.check_credentials()
    assert adapter.get_ticket(99) is None
    adapter.request("GET", "/api/v2/users/me", operation="retried after a 500")
    adapter.request("POST", "/api/v2/uploads", params={"filename": "a.bin"}, data=PDF,
                    headers={"Content-Type": "application/octet-stream"}, operation="upload")
    assert len(server.seen) == 5
    assert len(sleeps) == 1
    assert {s.client_port for s in server.seen} == {server.seen[0].client_port}


def test_cookies_are_neither_kept_nor_sent(server: Recorder) -> None:
    session = plain_session()
    adapter = token_adapter(server.url, session=session)
    server.answer(Answer(200, headers={"Set-Cookie": "__cfruid=abc; Path=/; HttpOnly"}))
    adapter.check_credentials()
    adapter.check_credentials()
    assert [s.header("Cookie") for s in server.seen] == [None, None]
    assert len(session.cookies) == 0


def test_a_redirect_is_an_error_and_is_not_followed(server: Recorder) -> None:
    adapter = token_adapter(server.url)
    server.answer(Answer(301, {"error": "moved"},
                         headers={"Location": "https://other.example/api/v2/users/me"}))
    with pytest.raises(PermanentHostError, match="redirect to https://other.example"):
        adapter.check_credentials()
    assert len(server.seen) == 1


def test_a_read_timeout_is_a_transient_error(server: Recorder) -> None:
    adapter = token_adapter(server.url, timeout=(2.0, 0.3), max_attempts=1)
    server.answer(Answer(hang=True))
    with pytest.raises(TransientHostError, match="timed out waiting for Zendesk"):
        adapter.check_credentials()
    assert len(server.seen) == 1


def test_connection_refused_is_transient() -> None:
    with Recorder() as gone:
        url = gone.url
    adapter = token_adapter(url, max_attempts=1)
    with pytest.raises(TransientHostError, match="connection failed"):
        adapter.check_credentials()


# -- OAuth, retries, observers ------------------------------------------------------------------


def oauth_adapter(url: str, sleeps: list[float]) -> ZendeskAdapter:
    auth = OAuthClientCredentials("pmb-client", "s3cr3t-Zq9", "read write", 3600)
    return ZendeskAdapter(ZendeskSettings(base_url=url, auth=auth, max_attempts=3),
                          session=plain_session(), sleep=sleeps.append)


def token(value: str) -> Answer:
    return Answer(200, {"access_token": value, "token_type": "bearer", "scope": "read write",
                        "expires_in": 3600})


def test_oauth_token_is_fetched_and_renewed_once_on_401(server: Recorder) -> None:
    sleeps: list[float] = []
    adapter = oauth_adapter(server.url, sleeps)
    observer = Observer()
    adapter.on_response = observer.observe_host_response
    server.answer(token("at-1"), Answer(200), Answer(401, {"error": "Couldn't authenticate you"}),
                  token("at-2"), Answer(200))
    adapter.check_credentials()
    adapter.check_credentials()
    assert [(s.method, s.path, s.header("Authorization")) for s in server.seen] == [
        ("POST", "/oauth/tokens", None),
        ("GET", "/api/v2/users/me", "Bearer at-1"),
        ("GET", "/api/v2/users/me", "Bearer at-1"),
        ("POST", "/oauth/tokens", None),
        ("GET", "/api/v2/users/me", "Bearer at-2"),
    ]
    grant = server.seen[0]
    assert grant.header("Content-Type") == "application/json"
    assert json.loads(grant.body) == {"grant_type": "client_credentials",
                                      "client_id": "pmb-client", "client_secret": "s3cr3t-Zq9",
                                      "scope": "read write", "expires_in": 3600}
    assert observer.responses == [("POST", 200), ("GET", 200), ("GET", 401), ("POST", 200),
                                  ("GET", 200)]
    assert sleeps == []  # a refused token is renewed at once, not retried after a wait


def test_429_retry_after_is_waited_and_the_create_resent_byte_for_byte(server: Recorder) -> None:
    sleeps: list[float] = []
    adapter = token_adapter(server.url, sleeps=sleeps)
    observer = Observer()
    adapter.on_response = observer.observe_host_response
    adapter.on_retry = observer.observe_host_retry
    server.answer(Answer(429, {"error": "TooManyRequests"}, headers={"Retry-After": "7"}),
                  Answer(201, {"ticket": {"id": 4711}}, headers={"x-idempotency-lookup": "miss"}))
    created = adapter.create_ticket(NewTicket(
        subject="Richiesta", requester_email="mario.rossi@esempio.it",
        requester_name="Mario Rossi", body_text="Testo è", idempotency_key="pmb:acct1:k1"))
    assert created.id == "4711" and not created.replayed
    assert sleeps == [7.0]
    first, second = server.seen
    assert first.body == second.body and first.body
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key") == "pmb:acct1:k1"
    assert observer.responses == [("POST", 429), ("POST", 201)]
    assert observer.retries == 1


def test_session_response_hooks_still_run(server: Recorder) -> None:
    session = plain_session()
    seen: list[int] = []
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    token_adapter(server.url, session=session).check_credentials()
    assert seen == [200]


def test_make_host_wires_the_observer_and_reads_the_proxy_environment_once(
        server: Recorder, no_proxy_env: pytest.MonkeyPatch) -> None:
    # The recorder plays the HTTP proxy in front of the helpdesk.
    no_proxy_env.setenv("HTTP_PROXY", server.url)
    config = HostConfig(type="zendesk", url=NOWHERE, auth_type="api_token",
                        email=EMAIL, api_token=API_TOKEN)
    observer = Observer()
    host = make_host(config, observer=observer, sleep=lambda seconds: None)
    no_proxy_env.delenv("HTTP_PROXY")
    host.check_credentials()
    (seen,) = server.seen
    assert seen.target == NOWHERE + "/api/v2/users/me"
    assert seen.header("Authorization") == BASIC
    assert observer.responses == [("GET", 200)]


def test_a_trusting_session_reads_the_proxy_environment_when_the_adapter_is_built(
        server: Recorder, no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTP_PROXY", server.url)
    adapter = token_adapter(NOWHERE, session=requests.Session())  # trust_env
    no_proxy_env.delenv("HTTP_PROXY")
    adapter.check_credentials()
    adapter.check_credentials()
    assert [s.target for s in server.seen] == [NOWHERE + "/api/v2/users/me"] * 2


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(pki) -> Iterator[Recorder]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    with Recorder(context) as srv:
        yield srv


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_with_the_configured_ca(tls_server: Recorder, pki) -> None:
    token_adapter(tls_server.url, ca_file=str(pki.ca_file)).check_credentials()
    # A certificate that does not verify is permanent: no retry (issue 12), whatever
    # max_attempts says.
    with pytest.raises(HostCertificateError, match="not trusted"):
        token_adapter(tls_server.url, max_attempts=3).check_credentials()
    token_adapter(tls_server.url, verify_tls=False).check_credentials()
    assert len(tls_server.seen) == 2  # the refused handshake never got to a request


def test_a_trusting_session_takes_the_ca_bundle_from_the_environment(
        tls_server: Recorder, pki, no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    token_adapter(tls_server.url, session=requests.Session()).check_credentials()
    assert len(tls_server.seen) == 1


# -- logging ------------------------------------------------------------------------------------


def test_creates_and_comments_log_at_debug_only(server: Recorder, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="connector.hosts")
    adapter = token_adapter(server.url)
    server.answer(Answer(201, {"ticket": {"id": 4711}}),
                  Answer(200, {"users": [], "count": 0, "next_page": None}),
                  Answer(200, {"ticket": {"id": 4711}, "audit": {"id": 1, "events": []}}))
    adapter.create_ticket(NewTicket(subject="S", requester_email="a@esempio.it",
                                    requester_name="A", body_text="x"))
    adapter.add_comment(Comment(ticket_id="4711", body_text="y", author_email="b@esempio.it"))
    ours = [r for r in caplog.records if r.name.startswith("connector.hosts")]
    assert any("ticket #4711 created" in r.getMessage() for r in ours)
    assert any("added" in r.getMessage() for r in ours)
    assert [r.getMessage() for r in ours if r.levelno >= logging.INFO] == []


# -- call_with_retries --------------------------------------------------------------------------


class Flaky:
    """A send() that fails with the given errors first, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retries_success_at_once_needs_no_wait() -> None:
    sleeps: list[float] = []
    send = Flaky()
    assert call_with_retries(RetryPolicy(), sleeps.append, "op", send) == "ok"
    assert (send.calls, sleeps) == (1, [])


def test_retries_after_failures_wait_count_and_log_as_before(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="connector.hosts.retry")
    sleeps: list[float] = []
    retried: list[int] = []
    send = Flaky(TransientHostError("busy", status=429, retry_after=2.0),
                 TransientHostError("busy", status=503, retry_after=3.0))
    result = call_with_retries(RetryPolicy(max_attempts=5), sleeps.append, "op", send,
                               lambda: retried.append(1))
    assert result == "ok"
    assert (send.calls, sleeps, len(retried)) == (3, [2.0, 3.0], 2)
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == ["op failed (attempt 1/5)",
                                                   "op failed (attempt 2/5)"]


def test_retries_give_up_after_max_attempts_naming_the_count() -> None:
    sleeps: list[float] = []
    send = Flaky(*[TransientHostError("down", status=500) for _ in range(3)])
    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts") as info:
        call_with_retries(RetryPolicy(max_attempts=3, max_backoff=1.0), sleeps.append, "op", send)
    assert info.value.status == 500
    assert (send.calls, len(sleeps)) == (3, 2)


def test_a_single_attempt_policy_gives_up_at_once() -> None:
    sleeps: list[float] = []
    send = Flaky(TransientHostError("down", status=500))
    with pytest.raises(RetriesExhausted, match="gave up after 1 attempt\\)"):
        call_with_retries(RetryPolicy(max_attempts=1), sleeps.append, "op", send)
    assert (send.calls, sleeps) == (1, [])


def test_a_retry_after_beyond_max_backoff_is_left_to_the_next_poll() -> None:
    sleeps: list[float] = []
    send = Flaky(TransientHostError("limit", status=429, retry_after=900.0))
    with pytest.raises(RetriesExhausted) as info:
        call_with_retries(RetryPolicy(max_backoff=60.0), sleeps.append, "op", send)
    assert info.value.retry_after == 900.0
    assert (send.calls, sleeps) == (1, [])


@pytest.mark.parametrize("error", [PermanentHostError("no", status=422),
                                   RetriesExhausted("inner loop gave up"), ValueError("bug")])
def test_errors_that_are_not_retried_propagate_unchanged(error: Exception) -> None:
    sleeps: list[float] = []
    send = Flaky(error)
    with pytest.raises(type(error)) as info:
        call_with_retries(RetryPolicy(), sleeps.append, "op", send)
    assert info.value is error
    assert (send.calls, sleeps) == (1, [])


def test_a_later_permanent_error_ends_the_retries() -> None:
    sleeps: list[float] = []
    final = PermanentHostError("no", status=422)
    send = Flaky(TransientHostError("busy", status=503, retry_after=1.0), final)
    with pytest.raises(PermanentHostError) as info:
        call_with_retries(RetryPolicy(), sleeps.append, "op", send)
    assert info.value is final
    assert (send.calls, sleeps) == (2, [1.0])

