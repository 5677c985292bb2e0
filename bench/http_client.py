"""CPU per request of the Zendesk adapter's HTTP client, and of the layers under it.

``python3 bench/http_client.py [--requests N] [--rounds R]`` starts ``bench/host_double.py`` on
127.0.0.1 (its own process, so its CPU is not counted) and sends the same mix of calls through:

- ``adapter``: ``ZendeskAdapter.request`` as the bridge uses it (retry loop, auth, checks,
  JSON answers read), on its own transport (``connector/hosts/transport.py``);
- ``adapter, Session.request``: the same adapter with its transport swapped for one that calls
  ``requests.Session.request`` as the adapter did before (the old path, for comparison);
- ``requests Session.request``: plain requests, the arguments the old adapter passed;
- ``requests HTTPAdapter.send``: a hand-built ``PreparedRequest`` to the session's adapter;
- ``urllib3 pool``: ``HTTPConnectionPool.urlopen``, no requests at all;
- ``http.client``: one kept-alive ``HTTPConnection``.

The mix (one of each per cycle, as a mail's host calls are): GET a ticket with users, GET a user
search, POST a 2 kB JSON ticket with an Idempotency-Key, PUT a 2 kB JSON update, POST a 20 kB
upload. CPU is ``time.process_time()`` of this process (the client side only); the figure is
the median over the rounds, in microseconds per request. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import requests  # noqa: E402
import urllib3  # noqa: E402
from host_double import HostDouble  # noqa: E402

from connector.hosts.zendesk import ApiTokenAuth, ZendeskAdapter, ZendeskSettings  # noqa: E402

UPLOAD = bytes(range(256)) * 80  # 20 kB
AUTH = "Basic YmVuY2hAZXhhbXBsZS5jb20vdG9rZW46YmVuY2gtdG9rZW4="


def _ticket_body(n: int) -> bytes:
    text = "Buongiorno, vi scrivo per la fattura 2024/117. " * 40
    return json.dumps({"ticket": {"subject": f"Richiesta {n}", "comment": {"body": text},
                                  "requester": {"name": "Mario Rossi",
                                                "email": "mario.rossi@example.it"},
                                  "tags": ["pmb_acct1"]}}).encode()


def _update_body() -> bytes:
    text = "Grazie, allego la ricevuta richiesta. " * 50
    return json.dumps({"ticket": {"comment": {"body": text, "public": True}}}).encode()


class Call:
    """One request of the mix, as method, path, query, body and extra headers."""

    def __init__(self, method: str, path: str, params: Mapping[str, str] | None,
                 body: bytes | None, headers: Mapping[str, str]) -> None:
        self.method, self.path, self.params = method, path, params
        self.body, self.headers = body, dict(headers)


def _mix(ticket_id: int) -> list[Call]:
    json_type = {"Content-Type": "application/json"}
    return [
        Call("GET", f"/api/v2/tickets/{ticket_id}", {"include": "users"}, None, {}),
        Call("GET", "/api/v2/users/search", {"query": "email:mario.rossi@example.it"}, None, {}),
        Call("POST", "/api/v2/tickets", None, _ticket_body(1),
             {**json_type, "Idempotency-Key": "pmb:bench:1"}),
        Call("PUT", f"/api/v2/tickets/{ticket_id}", None, _update_body(), json_type),
        Call("POST", "/api/v2/uploads", {"filename": "ricevuta.pdf"}, UPLOAD,
             {"Content-Type": "application/pdf"}),
    ]


class SessionRequestTransport:
    """The adapter's transport as it was: every call through ``requests.Session.request``."""

    def __init__(self, session: requests.Session, settings: ZendeskSettings) -> None:
        self._session = session
        self._timeout = settings.timeout
        self._verify: bool | str = settings.ca_file or settings.verify_tls

    def send(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
             body: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> requests.Response:
        return self._session.request(method, url, params=params, data=body,
                                     headers=dict(headers or {}), timeout=self._timeout,
                                     verify=self._verify, allow_redirects=False)


def _adapter(url: str, *, old_path: bool) -> ZendeskAdapter:
    session = requests.Session()
    session.trust_env = False  # as connector/hosts/factory.py builds it
    settings = ZendeskSettings(base_url=url, auth=ApiTokenAuth("bench@example.com", "tok"))
    adapter = ZendeskAdapter(settings, session=session)
    if old_path:
        if not hasattr(adapter, "_transport"):
            raise SystemExit("this adapter has no transport to swap: it is the old path")
        adapter._transport = SessionRequestTransport(session, settings)
    return adapter


def _clients(url: str, port: int) -> dict[str, Callable[[Call], object]]:
    clients: dict[str, Callable[[Call], object]] = {}

    def adapter_call(adapter: ZendeskAdapter) -> Callable[[Call], object]:
        def call(c: Call) -> object:
            return adapter.request(c.method, c.path, params=c.params, data=c.body,
                                   headers=c.headers, operation="bench").json()
        return call

    clients["adapter"] = adapter_call(_adapter(url, old_path=False))
    if hasattr(_adapter(url, old_path=False), "_transport"):
        clients["adapter, Session.request (old path)"] = adapter_call(
            _adapter(url, old_path=True))

    session = requests.Session()
    session.trust_env = False

    def session_call(c: Call) -> object:
        headers = {"Accept": "application/json", **c.headers, "Authorization": AUTH}
        return session.request(c.method, url + c.path, params=c.params, data=c.body,
                               headers=headers, timeout=(10.0, 60.0), verify=True,
                               allow_redirects=False).json()

    clients["requests Session.request"] = session_call

    def adapter_send_call(c: Call) -> object:
        prepared = requests.PreparedRequest()
        prepared.prepare(method=c.method, url=url + c.path, params=c.params, data=c.body,
                         headers={**session.headers, "Accept": "application/json",
                                  **c.headers, "Authorization": AUTH})
        full = prepared.url or ""
        resp = session.get_adapter(full).send(prepared, timeout=(10.0, 60.0))
        return json.loads(resp.content)

    clients["requests HTTPAdapter.send (prepare())"] = adapter_send_call

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)

    def urllib3_call(c: Call) -> object:
        target = c.path + ("?" + urlencode(c.params) if c.params else "")
        headers = {"Accept": "application/json", **c.headers, "Authorization": AUTH}
        resp = pool.urlopen(c.method, target, body=c.body, headers=headers,
                            retries=False, redirect=False)
        return json.loads(resp.data)

    clients["urllib3 pool"] = urllib3_call

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def http_client_call(c: Call) -> object:
        target = c.path + ("?" + urlencode(c.params) if c.params else "")
        headers = {"Accept": "application/json", **c.headers, "Authorization": AUTH}
        conn.request(c.method, target, body=c.body, headers=headers)
        return json.loads(conn.getresponse().read())

    clients["http.client"] = http_client_call
    return clients


def _cpu_us_per_request(call: Callable[[Call], object], mix: list[Call], count: int) -> float:
    cycles = max(1, count // len(mix))
    start = time.process_time()
    for _ in range(cycles):
        for c in mix:
            call(c)
    return (time.process_time() - start) / (cycles * len(mix)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with HostDouble() as host:
        created = requests.post(host.url + "/api/v2/tickets", data=_ticket_body(0), timeout=10)
        ticket_id = int(created.json()["ticket"]["id"])
        mix = _mix(ticket_id)
        clients = _clients(host.url, host.port)
        figures: dict[str, list[float]] = {name: [] for name in clients}
        for call in clients.values():  # warm up: connections, caches, imports
            _cpu_us_per_request(call, mix, 100)
        for _ in range(args.rounds):
            # Interleaved, so a noisy moment on the shared cores hits every client alike.
            for name, call in clients.items():
                figures[name].append(_cpu_us_per_request(call, mix, args.requests))
    print(f"CPU per request, client side (median of {args.rounds} rounds x {args.requests} "
          f"requests; mix: {', '.join(f'{c.method} {c.path}' for c in mix)})")
    for name, values in figures.items():
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"  {name:42s} {statistics.median(values):7.0f} us   (rounds {spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
