"""A zero-latency Zendesk stand-in for the benchmarks: answers at once, keeps almost nothing.

Why not ``tests/zendesk_double.py``: that double is built for correctness tests. It rewrites its
whole state as JSON after every change and stores every uploaded blob, so each request costs
time proportional to everything done before (measured in bench/RESULTS.md); over a 2,000-mail
run the host would become the bottleneck being measured. This one keeps tickets in a dict,
throws uploaded bytes away after reading them, and answers with Zendesk-shaped JSON (the
fields the adapter reads). It does not check idempotency keys, limits or authentication.

It runs in its own process (``HostDouble``), so its CPU time is visible apart from the
bridge's (``cpu_seconds()``). ``GET /_bench/stats`` returns request counts per route, bytes
received, and for each ticket create the time it arrived (``time.monotonic()``, which is the
same clock in every process on Linux) and its subject, for the IDLE latency measurement.
``POST /_bench/reset`` forgets everything.

``--latency-ms`` delays every answer (a real Zendesk answers in 100-300 ms); the connection's
thread sleeps, so concurrent requests overlap as they do at a real host. ``--rate-limit N``
enforces N requests per 60-second sliding window as Zendesk's plan limit does: over it, 429 with
``Retry-After`` and the ``X-Rate-Limit``/``ratelimit-*`` headers on every answer; the stats count
the 429s.

Loopback only. Run by hand: ``python bench/host_double.py --port 8099``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

STAMP = "2024-06-03T08:00:00Z"
_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(/tags|/audits|/comments)?$")
_NUMBER = re.compile(r"/\d+")
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
            429: "Too Many Requests"}
_WINDOW = 60.0


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.next_id = 1000
        self.tickets: dict[int, dict[str, Any]] = {}
        self.users: dict[str, int] = {}
        self.routes: Counter[str] = Counter()
        self.bytes_in = 0
        self.creates: list[tuple[float, str]] = []
        self.window: deque[float] = deque()  # request arrivals of the last minute

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def user_id(self, email: str) -> int:
        key = email.strip().lower()
        if key not in self.users:
            self.users[key] = self.new_id()
        return self.users[key]


def _ticket(t: dict[str, Any]) -> dict[str, Any]:
    return {"id": t["id"], "url": f"/api/v2/tickets/{t['id']}.json", "status": t["status"],
            "subject": t["subject"], "requester_id": t["requester_id"],
            "submitter_id": t["requester_id"], "email_cc_ids": [], "collaborator_ids": [],
            "tags": t["tags"], "external_id": t["external_id"], "created_at": STAMP,
            "updated_at": t["updated_at"]}


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, read and written by hand.

    ``http.server`` parses each request's headers with the email package and writes headers
    and body separately: about 0.35 ms of CPU per request, on the core the bridge's other
    processes share. A zero-latency host should not be what the benchmark measures, so this
    reads the request line, the headers and ``Content-Length`` bytes, and answers in one
    ``sendall`` (which also keeps Nagle out of it; the socket has TCP_NODELAY as well)."""

    server: _Server
    headers: dict[str, str]

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            try:
                method, target, _version = line.decode("latin-1").split()
            except ValueError:
                self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            headers: dict[str, str] = {}
            while True:
                header = self.rfile.readline(65537)
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.headers = headers
            length = int(headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            self._answer(method, target, body)
            if headers.get("connection", "").lower() == "close":
                return

    def _answer(self, method: str, target: str, body: bytes) -> None:
        arrived = time.monotonic()
        split = urlsplit(target)
        query = parse_qs(split.query)
        state = self.server.state
        extra = ""
        limited = split.path.startswith("/api/") and self.server.rate_limit
        with state.lock:
            state.bytes_in += len(body)
            if limited:
                window = state.window
                while window and window[0] <= arrived - _WINDOW:
                    window.popleft()
                remaining = self.server.rate_limit - len(window)
                reset = int(window[0] + _WINDOW - arrived) + 1 if window else int(_WINDOW)
                extra = (f"X-Rate-Limit: {self.server.rate_limit}\r\n"
                         f"X-Rate-Limit-Remaining: {max(0, remaining - 1)}\r\n"
                         f"ratelimit-limit: {self.server.rate_limit}\r\n"
                         f"ratelimit-remaining: {max(0, remaining - 1)}\r\n"
                         f"ratelimit-reset: {reset}\r\n")
            if limited and remaining <= 0:
                state.routes["429"] += 1
                status, answer = 429, {"error": "APIRateLimitExceeded",
                                       "description": "Number of allowed API requests per "
                                                      "minute exceeded"}
                extra += f"Retry-After: {reset}\r\n"
            else:
                if limited:
                    state.window.append(arrived)
                status, answer = self._route(method, split.path, query, body, arrived)
        if self.server.latency and split.path.startswith("/api/"):
            time.sleep(max(0.0, arrived + self.server.latency - time.monotonic()))
        data = json.dumps(answer).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                "Content-Type: application/json; charset=utf-8\r\n"
                f"{extra}Content-Length: {len(data)}\r\n\r\n").encode("latin-1")
        self.wfile.write(head + data)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               arrived: float) -> tuple[int, Any]:
        state = self.server.state
        if path.startswith("/_bench/"):
            if path == "/_bench/stats":
                return 200, {"routes": dict(state.routes), "bytes_in": state.bytes_in,
                             "creates": state.creates, "tickets": len(state.tickets),
                             "pid": os.getpid()}
            if path == "/_bench/reset" and method == "POST":
                state.reset()
                return 200, {}
            return 404, {"error": "no such bench control"}
        match = _TICKET.match(path)
        state.routes[method + " " + _NUMBER.sub("/{id}", path)] += 1
        if path == "/oauth/tokens" and method == "POST":
            return 200, {"access_token": "bench-token", "token_type": "bearer",
                         "scope": "read write", "expires_in": 172800}
        if path == "/api/v2/users/me":
            return 200, {"user": {"id": 100, "name": "Bench", "email": "bench@example.com",
                                  "role": "admin"}}
        if path == "/api/v2/users/search":
            q = (query.get("query") or [""])[0]
            email = q.split(":", 1)[1] if q.lower().startswith("email:") else q
            return 200, {"users": [{"id": state.user_id(email), "email": email, "name": email}],
                         "count": 1, "next_page": None}
        if path == "/api/v2/uploads" and method == "POST":
            att_id = state.new_id()
            name = (query.get("filename") or ["file"])[0]
            attachment = {"id": att_id, "file_name": name, "size": len(body),
                          "content_url": f"http://127.0.0.1/attachments/token/t{att_id}/?name=x",
                          "content_type": self.headers.get("content-type", "")}
            return 201, {"upload": {"token": f"up{att_id}", "attachment": attachment,
                                    "attachments": [attachment]}}
        if path == "/api/v2/tickets" and method == "POST":
            payload = json.loads(body)["ticket"]
            requester = payload.get("requester") or {}
            ticket_id = state.new_id()
            ticket = {"id": ticket_id, "status": payload.get("status") or "new",
                      "subject": payload.get("subject", ""),
                      "requester_id": state.user_id(requester.get("email", "")),
                      "tags": list(payload.get("tags") or []),
                      "external_id": payload.get("external_id"), "updated_at": STAMP}
            state.tickets[ticket_id] = ticket
            state.creates.append((arrived, ticket["subject"]))
            return 201, {"ticket": _ticket(ticket), "audit": {"id": state.new_id(),
                                                              "events": []}}
        if path == "/api/v2/tickets" and method == "GET":
            return 200, {"tickets": [], "users": [], "count": 0, "next_page": None}
        if match is None:
            return 404, {"error": "InvalidEndpoint", "description": "Not found"}
        ticket = state.tickets.get(int(match.group(1)))
        if ticket is None:
            return 404, {"error": "RecordNotFound", "description": "Not found"}
        sub = match.group(2)
        if sub == "/audits" or sub == "/comments":
            return 200, {sub[1:]: [], "next_page": None, "count": 0}
        if sub == "/tags":
            tags = json.loads(body or b"{}").get("tags") or []
            if method == "PUT":
                ticket["tags"] += [t for t in tags if t not in ticket["tags"]]
            elif method == "DELETE":
                ticket["tags"] = [t for t in ticket["tags"] if t not in tags]
            return 200, {"tags": ticket["tags"]}
        if method == "PUT":
            update = json.loads(body)["ticket"]
            if update.get("status"):
                ticket["status"] = update["status"]
            if update.get("tags") is not None:
                ticket["tags"] = list(update["tags"])
            ticket["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            return 200, {"ticket": _ticket(ticket), "audit": {"id": state.new_id(),
                                                              "events": []}}
        requester = {"id": ticket["requester_id"], "email": next(
            (e for e, i in state.users.items() if i == ticket["requester_id"]), "")}
        return 200, {"ticket": _ticket(ticket), "users": [requester]}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, latency: float = 0.0,
                 rate_limit: int = 0) -> None:
        super().__init__(address, _Handler)
        self.state = _State()
        self.latency = latency
        self.rate_limit = rate_limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Zero-latency Zendesk stand-in (loopback).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=int, default=0, help="requests per minute")
    args = parser.parse_args(argv)
    server = _Server(("127.0.0.1", args.port), latency=args.latency_ms / 1000.0,
                     rate_limit=args.rate_limit)
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HostDouble:
    """The stand-in in a subprocess: ``with HostDouble() as host: host.url ...``."""

    def __init__(self, *, latency_ms: float = 0.0, rate_limit: int = 0) -> None:
        self.latency_ms = latency_ms
        self.rate_limit = rate_limit
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._http = requests.Session()
        self._http.trust_env = False

    def start(self, timeout: float = 10.0) -> HostDouble:
        port_file = Path(tempfile.mkdtemp(prefix="bench-host-")) / "port"
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port-file", str(port_file),
             "--latency-ms", str(self.latency_ms), "--rate-limit", str(self.rate_limit)],
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("bench host double did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        port_file.unlink()
        port_file.parent.rmdir()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> HostDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def stats(self) -> dict[str, Any]:
        resp = self._http.get(self.url + "/_bench/stats", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        self._http.post(self.url + "/_bench/reset", timeout=10).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
