"""An OTOBO / Znuny GenericInterface test double: an HTTP server in its own process.

Run it as ``python tests/otobo_double.py --port 0 --state /tmp/otobo.json --port-file F``, or from
pytest through :class:`OtoboDouble` (start/stop/kill, ``.url``, ``.tickets()``,
``.inject(...)``). State is written to the ``--state`` JSON file after every change, so it
survives the bridge's restarts and its own.

It serves the REST web service the bridge ships (contrib/otobo/PostmasterBridge.yml) under
``/otobo/nph-genericinterface.pl/Webservice/PostmasterBridge`` and answers as OTOBO does; each
behaviour names the RotherOSS/otobo module it follows (znuny/Znuny has the same files):

- ``Kernel/GenericInterface/Transport/HTTP/REST.pm``: a request body over ``MaxLength`` gets
  **413** (``ProviderProcessRequest``); a route that maps no operation, or a body that is not
  JSON, gets **500 text/plain**; an operation that ran answers **200**, also with an ``Error``;
  an operation that failed inside (``Success => 0``) answers **500**
  ``{"faultcode":"Server","faultstring":...}`` (``ProviderGenerateResponse``).
- ``Kernel/GenericInterface/Operation/Session/SessionCreate.pm``: ``{"SessionID"}`` or
  ``SessionCreate.AuthFail``.
- ``Kernel/GenericInterface/Operation/Common.pm`` (``Auth``): every operation checks its
  ``SessionID`` first; an unknown or expired one gives ``<Operation>.AuthFail``. Sessions expire
  after ``--session-max-time`` seconds (OTOBO's ``SessionMaxTime``), or at once with
  ``POST /_test/expire_sessions``.
- ``Kernel/GenericInterface/Operation/Ticket/TicketCreate.pm``: ``TicketCreate.MissingParameter``
  (Title, Queue, State, Priority, CustomerUser, Article Subject/Body/ContentType),
  ``TicketCreate.InvalidParameter`` (unknown queue/state/priority, CommunicationChannel,
  SenderType, dynamic field), ``TicketCreate.AccessDenied`` (a queue the agent may not create
  in: ``--denied-queue``); not atomic as in ``_TicketCreate``: ticket, then its ticket-level
  dynamic fields, then the article, article dynamic fields, attachments. The fault
  ``{"between": "ticket_and_article"}`` stops right there with the 500 OTOBO gives when
  ``ArticleCreate`` fails ("Article could not be created, please contact the system
  administrator"), leaving the ticket behind. Ticket numbers follow
  ``Kernel/System/Ticket/Number/DateChecksum.pm`` (date, SystemID 10, counter, check digit).
- ``TicketUpdate.pm``: ``TicketID`` or ``TicketNumber``; ``Ticket`` changes, an ``Article``
  (same checks as create), ``DynamicField`` (article-level ones land on the new article),
  ``Attachment``; ``TicketUpdate.EmptyRequest`` with nothing to do; updating a closed ticket is
  allowed (OTOBO has no 422: the state simply changes).
- ``TicketGet.pm``: ``{"Ticket": [...]}`` with ``DynamicField`` as a ``[{Name, Value}]`` list,
  articles with ``AllArticles``, ``TicketGet.NotValidTicketID`` for an unknown id.
- ``TicketSearch.pm``: ``TicketNumber``, ``Title``, ``CustomerUserLogin``,
  ``DynamicField_<Name>: {Equals: ...}``; ``{"TicketID": [...]}`` or ``{}`` for no match.

Test controls under ``/_test``: ``GET state``, ``GET|DELETE requests``, ``POST|DELETE faults``,
``POST expire_sessions``, ``POST tickets/{id}/state`` (``{"State", "StateType"}``),
``POST reset``, ``GET health``. A fault is ``{"path_regex", "method"?, "status"?, "count"?,
"when": "before"|"after", "drop"?, "delay"?, "between"?}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from zendesk_double import DoubleProcess

PREFIX = "/otobo/nph-genericinterface.pl/Webservice/PostmasterBridge"
AGENT = "pmb-agent"
AGENT_PASSWORD = "double-agent-password-5e1"
QUEUES = ("Raw", "Postmaster", "PEC", "Misc", "Junk")
STATES = {"new": "new", "open": "open", "pending reminder": "pending reminder",
          "pending auto close+": "pending auto", "closed successful": "closed",
          "closed unsuccessful": "closed", "merged": "merged", "removed": "removed"}
PRIORITIES = ("1 very low", "2 low", "3 normal", "4 high", "5 very high")
#: Dynamic fields by object type (AdminDynamicField); values of others are refused.
TICKET_FIELDS = ("PMBMessageID", "PMBTags", "PECIdentificativo", "PECCertifiedTime",
                 "PECSignature", "PECReceiptState", "PECReply", "Contract", "PECAccount")
ARTICLE_FIELDS = ("PMBArticleKey",)
CHANNELS = ("Email", "Phone", "Internal")
SENDER_TYPES = ("agent", "system", "customer")


class OperationError(Exception):
    """An ``Error`` answer (HTTP 200), Common.pm ``ReturnError``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Fault(Exception):
    """``Success => 0`` inside an operation: REST.pm answers 500 with a fault."""


class State:
    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path = path
        self.args = args
        self.lock = threading.RLock()
        self.data: dict[str, Any] = {"tickets": {}, "sessions": {}, "next_ticket": 1,
                                     "next_article": 1}
        self.faults: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        if path.exists():
            self.data = json.loads(path.read_text())

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def _require(data: dict[str, Any], op: str, *names: str, where: str = "") -> None:
    for name in names:
        if data.get(name) in (None, ""):
            raise OperationError(f"{op}.MissingParameter",
                                 f"{op}: {where}{name} parameter is missing or not valid!")


class Handler(BaseHTTPRequestHandler):
    server: DoubleServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = (json.dumps(body) if content_type.startswith("application/json")
               else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if url.path.startswith("/_test/"):
            body = self.rfile.read(length) if length else b""
            status, answer = self._control(method, url.path[len("/_test/"):],
                                           json.loads(body) if body else {})
            self._reply(status, answer)
            return
        if length > state.args.max_length:
            # REST.pm ProviderProcessRequest: checked before the body is read.
            self.rfile.read(length)
            self._reply(413, "Request Entity Too Large", "text/plain")
            return
        raw = self.rfile.read(length) if length else b""
        path = url.path
        with state.lock:
            state.requests.append({"method": method, "path": path, "size": length})
            fault = self._fault(method, path)
        if fault is not None and fault.get("when", "before") == "before" \
                and not fault.get("between"):
            if fault.get("drop"):
                self._drop()
                return
            self._reply(int(fault.get("status") or 500), fault.get("body") or "fault injected",
                        "text/plain")
            return
        if not path.startswith(PREFIX + "/"):
            self._reply(500, "HTTP::REST Error while determine Operation for request URI",
                        "text/plain")
            return
        route = path[len(PREFIX):]
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            self._reply(500, "HTTP::REST Error while decoding request", "text/plain")
            return
        if not isinstance(data, dict):
            self._reply(500, "HTTP::REST Invalid data", "text/plain")
            return
        for key, values in parse_qs(url.query).items():
            data.setdefault(key, values[-1])  # REST.pm merges query parameters
        operation = self._operation(method, route, data)
        if operation is None:
            self._reply(500, "HTTP::REST Error while determine Operation for request URI",
                        "text/plain")
            return
        try:
            with state.lock:
                answer = operation(data, fault)
                state.save()
        except OperationError as exc:
            answer = {"Error": {"ErrorCode": exc.code, "ErrorMessage": exc.message}}
        except Fault as exc:
            self._reply(500, {"faultcode": "Server", "faultstring": str(exc)})
            return
        if fault is not None and fault.get("when") == "after" and not fault.get("between"):
            if fault.get("delay"):
                time.sleep(float(fault["delay"]))
            if fault.get("drop"):
                self._drop()
                return
            if fault.get("status"):
                self._reply(int(fault["status"]), {"faultcode": "Server",
                                                   "faultstring": "fault injected"})
                return
        self._reply(200, answer)

    def _fault(self, method: str, path: str) -> dict[str, Any] | None:
        for fault in self.server.state.faults:
            if fault.get("method") and fault["method"] != method:
                continue
            if not re.search(fault["path_regex"], path):
                continue
            if fault.get("count", 1) == 0:
                continue
            if fault.get("count", 1) > 0:
                fault["count"] = fault.get("count", 1) - 1
            fault["hits"] = fault.get("hits", 0) + 1
            return dict(fault)
        return None

    def _operation(self, method: str, route: str, data: dict[str, Any]) -> Any:
        """RouteOperationMapping of the shipped web service."""
        if method == "POST" and route == "/Session":
            return self.session_create
        if method == "POST" and route == "/Ticket":
            return self.ticket_create
        if method == "POST" and route == "/TicketSearch":
            return self.ticket_search
        m = re.fullmatch(r"/Ticket/([^/]+)", route)
        if m and method in ("GET", "PATCH"):
            data.setdefault("TicketID", m.group(1))
            return self.ticket_get if method == "GET" else self.ticket_update
        return None

    # -- Common.pm Auth -----------------------------------------------------------------------
    def _auth(self, op: str, data: dict[str, Any]) -> None:
        """Kernel/GenericInterface/Operation/Common.pm ``Auth``: SessionID or login."""
        sessions = self.server.state.data["sessions"]
        session = sessions.get(str(data.get("SessionID") or ""))
        if data.get("UserLogin") == AGENT and data.get("Password") == AGENT_PASSWORD:
            return
        if session is None or session["expires"] < time.time():
            raise OperationError(f"{op}.AuthFail", f"{op}: Authorization failing!")

    # -- operations -----------------------------------------------------------------------------
    def session_create(self, data: dict[str, Any], fault: Any) -> dict[str, Any]:
        """Kernel/GenericInterface/Operation/Session/SessionCreate.pm."""
        _require(data, "SessionCreate", "UserLogin", "Password")
        if data["UserLogin"] != AGENT or data["Password"] != AGENT_PASSWORD:
            raise OperationError("SessionCreate.AuthFail",
                                 "SessionCreate: Authorization failing!")
        session_id = secrets.token_hex(16)
        self.server.state.data["sessions"][session_id] = {
            "expires": time.time() + self.server.state.args.session_max_time}
        return {"SessionID": session_id}

    def _check_article(self, op: str, article: Any) -> None:
        """TicketCreate.pm / TicketUpdate.pm ``_CheckArticle``."""
        if not isinstance(article, dict):
            raise OperationError(f"{op}.MissingParameter", f"{op}: Article parameter is missing!")
        _require(article, op, "Subject", "Body", where="Article->")
        if not article.get("ContentType") and not (article.get("MimeType")
                                                   and article.get("Charset")):
            raise OperationError(f"{op}.MissingParameter",
                                 f"{op}: Article->ContentType or MimeType and Charset is "
                                 "required!")
        if article.get("CommunicationChannel", "Internal") not in CHANNELS:
            raise OperationError(f"{op}.InvalidParameter",
                                 f"{op}: Article->CommunicationChannel is invalid!")
        if article.get("SenderType", "agent") not in SENDER_TYPES:
            raise OperationError(f"{op}.InvalidParameter", f"{op}: Article->SenderType is invalid!")

    def _check_fields(self, op: str, fields: Any) -> list[dict[str, Any]]:
        if isinstance(fields, dict):
            fields = [fields]
        for item in fields or []:
            if item.get("Name") not in TICKET_FIELDS + ARTICLE_FIELDS:
                raise OperationError(f"{op}.InvalidParameter",
                                     f"{op}: DynamicField->Name is invalid!")
        return list(fields or [])

    def _check_ticket_values(self, op: str, ticket: dict[str, Any]) -> None:
        if "Queue" in ticket and ticket["Queue"] not in QUEUES:
            raise OperationError(f"{op}.InvalidParameter", f"{op}: Ticket->Queue is invalid!")
        if ticket.get("Queue") in self.server.state.args.denied_queue:
            raise OperationError(f"{op}.AccessDenied", f"{op}: Access denied!")
        if "State" in ticket and ticket["State"] not in STATES:
            raise OperationError(f"{op}.InvalidParameter", f"{op}: Ticket->State is invalid!")
        if "Priority" in ticket and ticket["Priority"] not in PRIORITIES:
            raise OperationError(f"{op}.InvalidParameter",
                                 f"{op}: Ticket->Priority is invalid!")

    def _ticket_number(self, counter: int) -> str:
        """DateChecksum.pm: YYYYMMDD, SystemID, a counter and a check digit."""
        base = f"{datetime.now(UTC):%Y%m%d}10{counter:05d}"
        weights = (1, 2, 1, 2)
        check = sum(int(d) * weights[i % 4] for i, d in enumerate(base)) % 10
        return f"{base}{check}"

    def _add_article(self, ticket: dict[str, Any], article: dict[str, Any],
                     fields: list[dict[str, Any]], attachments: Any) -> int:
        state = self.server.state.data
        article_id = state["next_article"]
        state["next_article"] += 1
        if isinstance(attachments, dict):
            attachments = [attachments]
        stored = {
            "ArticleID": str(article_id),
            "CommunicationChannel": article.get("CommunicationChannel", "Internal"),
            "SenderType": article.get("SenderType", "agent"),
            "IsVisibleForCustomer": int(article.get("IsVisibleForCustomer", 1)),
            "From": article.get("From") or ticket["CustomerUserID"],
            # TicketCreate.pm: the article's To is the queue name.
            "To": article.get("To") if "TicketUpdate" in article.get("_op", "") else
            ticket["Queue"],
            "Cc": article.get("Cc", ""),
            "Subject": article["Subject"], "Body": article["Body"],
            "ContentType": article.get("ContentType") or
            f"{article.get('MimeType')}; charset={article.get('Charset')}",
            "DynamicField": [f for f in fields if f["Name"] in ARTICLE_FIELDS],
            "Attachment": [{"Filename": a["Filename"], "ContentType": a["ContentType"],
                            "FilesizeRaw": len(base64.b64decode(a["Content"])),
                            "ContentID": a.get("ContentID", ""), "Content": a["Content"]}
                           for a in attachments or []],
            "CreateTime": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }
        ticket["Article"].append(stored)
        return article_id

    def ticket_create(self, data: dict[str, Any], fault: Any) -> dict[str, Any]:
        """Kernel/GenericInterface/Operation/Ticket/TicketCreate.pm (Run, _TicketCreate)."""
        op = "TicketCreate"
        self._auth(op, data)
        ticket_in = data.get("Ticket")
        if not isinstance(ticket_in, dict):
            raise OperationError(f"{op}.MissingParameter", f"{op}: Ticket parameter is missing!")
        _require(ticket_in, op, "Title", "Queue", "State", "Priority", "CustomerUser",
                 where="Ticket->")
        self._check_ticket_values(op, ticket_in)
        article = data.get("Article")
        self._check_article(op, article)
        fields = self._check_fields(op, data.get("DynamicField"))
        state = self.server.state.data
        counter = state["next_ticket"]
        state["next_ticket"] += 1
        ticket: dict[str, Any] = {
            "TicketID": str(counter), "TicketNumber": self._ticket_number(counter),
            "Title": ticket_in["Title"], "Queue": ticket_in["Queue"],
            "State": ticket_in["State"], "StateType": STATES[ticket_in["State"]],
            "Priority": ticket_in["Priority"], "CustomerUserID": ticket_in["CustomerUser"],
            "CustomerID": ticket_in.get("CustomerID", ""),
            "Type": ticket_in.get("Type", "Unclassified"),
            **{k: ticket_in[k] for k in ("Service", "SLA", "Owner", "Responsible",
                                         "PendingTime") if k in ticket_in},
            "DynamicField": [f for f in fields if f["Name"] in TICKET_FIELDS],
            "Article": [],
        }
        state["tickets"][ticket["TicketID"]] = ticket
        if fault is not None and fault.get("between") == "ticket_and_article":
            self.server.state.save()
            raise Fault("Article could not be created, please contact the system administrator")
        article_id = self._add_article(ticket, article, fields, data.get("Attachment"))
        return {"TicketID": ticket["TicketID"], "TicketNumber": ticket["TicketNumber"],
                "ArticleID": str(article_id)}

    def _find(self, op: str, data: dict[str, Any]) -> dict[str, Any]:
        tickets = self.server.state.data["tickets"]
        if data.get("TicketNumber"):
            for t in tickets.values():
                if t["TicketNumber"] == str(data["TicketNumber"]):
                    return t
        elif str(data.get("TicketID") or "") in tickets:
            return tickets[str(data["TicketID"])]
        raise OperationError(f"{op}.AccessDenied" if op == "TicketUpdate"
                             else f"{op}.NotValidTicketID",
                             f"{op}: Could not get Ticket data!")

    def ticket_update(self, data: dict[str, Any], fault: Any) -> dict[str, Any]:
        """Kernel/GenericInterface/Operation/Ticket/TicketUpdate.pm (Run, _TicketUpdate)."""
        op = "TicketUpdate"
        self._auth(op, data)
        if not data.get("TicketID") and not data.get("TicketNumber"):
            raise OperationError(f"{op}.MissingParameter",
                                 f"{op}: TicketID or TicketNumber is required!")
        ticket = self._find(op, data)
        changes = data.get("Ticket") or {}
        article = data.get("Article")
        fields = self._check_fields(op, data.get("DynamicField"))
        if not changes and not article and not fields:
            raise OperationError(f"{op}.EmptyRequest", f"{op}: The request data is invalid!")
        self._check_ticket_values(op, changes)
        if article is not None:
            self._check_article(op, article)
        for key in ("Title", "Queue", "Priority", "Type", "Service", "SLA", "Owner",
                    "Responsible"):
            if key in changes:
                ticket[key] = changes[key]
        if "State" in changes:
            ticket["State"], ticket["StateType"] = changes["State"], STATES[changes["State"]]
        result: dict[str, Any] = {"TicketID": ticket["TicketID"],
                                  "TicketNumber": ticket["TicketNumber"]}
        if article is not None:
            result["ArticleID"] = str(self._add_article(
                ticket, {**article, "_op": op}, fields, data.get("Attachment")))
        current = {f["Name"]: f for f in ticket["DynamicField"]}
        for item in fields:
            if item["Name"] in TICKET_FIELDS:
                current[item["Name"]] = item
        ticket["DynamicField"] = list(current.values())
        return result

    def ticket_get(self, data: dict[str, Any], fault: Any) -> dict[str, Any]:
        """Kernel/GenericInterface/Operation/Ticket/TicketGet.pm."""
        op = "TicketGet"
        self._auth(op, data)
        _require(data, op, "TicketID")
        ticket = dict(self._find(op, data))
        if str(data.get("AllArticles") or "0") != "1":
            ticket.pop("Article")
        else:
            articles = list(ticket["Article"])
            if data.get("ArticleSenderType"):
                articles = [a for a in articles if a["SenderType"] == data["ArticleSenderType"]]
            if str(data.get("ArticleOrder", "ASC")).upper() == "DESC":
                articles.reverse()
            if data.get("ArticleLimit"):
                articles = articles[:int(data["ArticleLimit"])]
            ticket["Article"] = articles
        if str(data.get("DynamicFields") or "0") != "1":
            ticket.pop("DynamicField")
        return {"Ticket": [ticket]}

    def ticket_search(self, data: dict[str, Any], fault: Any) -> dict[str, Any]:
        """Kernel/GenericInterface/Operation/Ticket/TicketSearch.pm (``{}`` for no match)."""
        op = "TicketSearch"
        self._auth(op, data)
        found = []
        for ticket in self.server.state.data["tickets"].values():
            if data.get("TicketNumber") and ticket["TicketNumber"] != str(data["TicketNumber"]):
                continue
            if data.get("CustomerUserLogin") and \
                    ticket["CustomerUserID"] != data["CustomerUserLogin"]:
                continue
            ok = True
            for key, crit in data.items():
                if not key.startswith("DynamicField_") or not isinstance(crit, dict):
                    continue
                values = {f["Name"]: f["Value"] for f in ticket["DynamicField"]}
                if values.get(key[len("DynamicField_"):]) != crit.get("Equals"):
                    ok = False
            if ok:
                found.append(ticket["TicketID"])
        found.sort(key=int)
        return {"TicketID": found} if found else {}

    # -- test controls --------------------------------------------------------------------------
    def _control(self, method: str, name: str, body: Any) -> tuple[int, Any]:
        state = self.server.state
        with state.lock:
            if name == "health":
                return 200, {"ok": True}
            if name == "state":
                return 200, state.data
            if name == "requests":
                if method == "DELETE":
                    state.requests.clear()
                return 200, state.requests
            if name == "faults":
                if method == "DELETE":
                    state.faults.clear()
                elif method == "POST":
                    fault = {**body, "id": secrets.randbelow(10**9),
                             "hits": 0}
                    state.faults.append(fault)
                    return 200, fault
                return 200, state.faults
            if name == "expire_sessions":
                for session in state.data["sessions"].values():
                    session["expires"] = 0
                state.save()
                return 200, {}
            m = re.fullmatch(r"tickets/(\d+)/state", name)
            if m:
                ticket = state.data["tickets"][m.group(1)]
                ticket["State"] = body["State"]
                ticket["StateType"] = STATES[body["State"]]
                state.save()
                return 200, ticket
            if name == "reset":
                state.data = {"tickets": {}, "sessions": {}, "next_ticket": 1,
                              "next_article": 1}
                state.faults.clear()
                state.requests.clear()
                state.save()
                return 200, {}
        return 404, {"error": name}


class DoubleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        super().__init__(address, Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-answer (the crash test's SIGKILLs) is expected, not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--port-file", type=Path)
    p.add_argument("--max-length", type=int, default=100_000_000)
    p.add_argument("--session-max-time", type=float, default=57600.0)
    p.add_argument("--denied-queue", action="append", default=[])
    args = p.parse_args(argv)
    server = DoubleServer(("127.0.0.1", args.port), State(args.state, args))
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


class OtoboDouble(DoubleProcess):
    """Runs the double in a subprocess: ``with OtoboDouble(tmp_path / "o.json") as o: ...``
    (starting, stopping and killing it: ``DoubleProcess``, shared with the Zendesk double)."""

    script = Path(__file__).resolve()
    label = "OTOBO double"

    def __init__(self, state_path: Path, *, max_length: int = 100_000_000,
                 denied_queues: tuple[str, ...] = ()) -> None:
        options = ["--max-length", str(max_length)]
        for queue in denied_queues:
            options += ["--denied-queue", queue]
        super().__init__(state_path, options)
        self.user, self.password = AGENT, AGENT_PASSWORD

    def ready(self) -> None:
        self._call("GET", "health")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def settings(self, **overrides: Any) -> Any:
        from connector.hosts.otobo import OtoboSettings

        values: dict[str, Any] = {"base_url": self.url, "user": self.user,
                                  "password": self.password, "timeout": (2.0, 5.0),
                                  "max_attempts": 4, "max_backoff": 0.5}
        values.update(overrides)
        return OtoboSettings(**values)

    def host_config(self, password_file: Path, **otobo: Any) -> dict[str, Any]:
        """The ``host:`` section of a bridge config pointing at this double (the agent's
        password is written to ``password_file``, as a deployment keeps it)."""
        Path(password_file).write_text(self.password + "\n")
        return {"type": "otobo", "url": self.url, "timeout": 10, "max_attempts": 4,
                "otobo": {"user": self.user, "password_file": str(password_file), **otobo}}

    def _call(self, method: str, name: str, body: Any = None) -> Any:
        resp = self._http.request(method, f"http://127.0.0.1:{self.port}/_test/{name}",
                                  json=body, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def state(self) -> dict[str, Any]:
        return self._call("GET", "state")

    def tickets(self) -> list[dict[str, Any]]:
        return sorted(self.state()["tickets"].values(), key=lambda t: int(t["TicketID"]))

    def ticket_by_number(self, number: int | str) -> dict[str, Any]:
        return next(t for t in self.tickets() if t["TicketNumber"] == str(number))

    def requests_log(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")

    def inject(self, **fault: Any) -> dict[str, Any]:
        return self._call("POST", "faults", fault)

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def expire_sessions(self) -> None:
        self._call("POST", "expire_sessions")

    def set_state(self, ticket_id: str, state: str) -> None:
        self._call("POST", f"tickets/{ticket_id}/state", {"State": state})

    def reset(self) -> None:
        self._call("POST", "reset")


if __name__ == "__main__":
    sys.exit(main())
