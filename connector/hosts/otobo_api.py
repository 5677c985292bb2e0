"""OTOBO / Znuny GenericInterface: one REST web service, its sessions and its error shapes.

The web service is the one the bridge ships (contrib/otobo/PostmasterBridge.yml): its
``HTTP::REST`` provider maps

    POST  /Session            Session::SessionCreate
    POST  /Ticket             Ticket::TicketCreate
    GET   /Ticket/:TicketID   Ticket::TicketGet
    PATCH /Ticket/:TicketID   Ticket::TicketUpdate
    POST  /TicketSearch       Ticket::TicketSearch  (POST: nested DynamicField criteria need a
                                                     JSON body, a query string cannot carry them)

How OTOBO answers (RotherOSS/otobo ``Kernel/GenericInterface/Transport/HTTP/REST.pm``,
``ProviderGenerateResponse``; Znuny's file is the same):

- an operation that ran returns **HTTP 200**, also when it refused the request: the body is then
  ``{"Error": {"ErrorCode": "TicketCreate.MissingParameter", "ErrorMessage": "..."}}``
  (``Kernel/GenericInterface/Operation/Common.pm``, ``ReturnError``);
- an operation that failed inside (``Success => 0``: "Ticket could not be created", "Article
  could not be created") returns **HTTP 500** ``{"faultcode": "Server", "faultstring": ...}``;
- the transport itself answers 500 ``text/plain`` (unknown route, unreadable JSON) and **413**
  for a body over the web service's ``MaxLength`` (``ProviderProcessRequest``).

Authentication is in the body (``SessionID``, or ``UserLogin`` + ``Password``); every operation
checks it first and answers ``<Operation>.AuthFail`` (``Common.pm``, ``Auth``) when a session
expired (``SessionMaxTime`` / ``SessionMaxIdleTime``) or was removed, so the client creates a
new session once and repeats the call. ``<Operation>.AccessDenied`` means the agent lacks the
queue permission: no new session helps.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import requests

from connector.errors import PermanentHostError, TransientHostError
from connector.hosts.transport import HostTransport

log = logging.getLogger(__name__)

_USER_AGENT = "postmaster-bridge (+otobo adapter)"
_ERROR_TEXT_LIMIT = 600


class OtoboOperationError(PermanentHostError):
    """The operation answered with an ``Error`` object (HTTP 200); ``code`` is its ErrorCode."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}".rstrip(": "), status=200)
        self.code = code


class GenericInterfaceClient:
    """Calls operations of one web service with a session of one agent. Thread-safe."""

    def __init__(self, session: requests.Session, base_url: str, *, user: str, password: str,
                 timeout: float | tuple[float, float], verify: bool | str = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._password = password
        self._transport = HostTransport(session, self.base_url, timeout=timeout, verify=verify,
                                        headers={"Accept": "application/json",
                                                 "Content-Type": "application/json",
                                                 "User-Agent": _USER_AGENT})
        self._lock = threading.Lock()
        self._session_id: str | None = None
        self.on_response: Callable[[str, int | str], None] | None = None

    # -- sessions -------------------------------------------------------------------------
    def session_id(self) -> str:
        with self._lock:
            if self._session_id is None:
                answer = self._exchange("SessionCreate", "POST", "/Session",
                                        {"UserLogin": self.user, "Password": self._password})
                session_id = answer.get("SessionID")
                if not isinstance(session_id, str) or not session_id:
                    raise PermanentHostError("SessionCreate: the answer has no SessionID")
                self._session_id = session_id
            return self._session_id

    def _drop_session(self, stale: str) -> None:
        with self._lock:
            if self._session_id == stale:
                self._session_id = None

    # -- operations -----------------------------------------------------------------------
    def call(self, operation: str, method: str, path: str,
             data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One operation with the current session; an ``AuthFail`` (session expired) gets a
        new session and one more try. Raises ``OtoboOperationError`` for other Error answers,
        ``TransientHostError`` / ``PermanentHostError`` for transport failures."""
        renewed = False
        while True:
            session_id = self.session_id()
            try:
                return self._exchange(operation, method, path,
                                      {**(data or {}), "SessionID": session_id})
            except OtoboOperationError as exc:
                if exc.code.endswith(".AuthFail") and not renewed:
                    log.info("%s: session no longer valid; creating a new one", operation)
                    self._drop_session(session_id)
                    renewed = True
                    continue
                raise

    def _exchange(self, operation: str, method: str, path: str,
                  data: Mapping[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        params: dict[str, str] | None = None
        body: bytes | None = None
        if method == "GET":
            # GET carries its parameters in the query string (REST.pm merges them into the
            # request data); lists are comma-joined as OTOBO's TicketGet reads TicketID.
            params = {k: str(v) for k, v in data.items()}
        else:
            body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            resp = self._transport.send(method, url, params=params, body=body)
        except requests.Timeout as exc:
            raise TransientHostError(f"{operation}: timed out waiting for the helpdesk") from exc
        except requests.ConnectionError as exc:
            raise TransientHostError(
                f"{operation}: connection failed: {type(exc).__name__}") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise PermanentHostError(f"{operation}: bad URL {url}") from exc
        except requests.RequestException as exc:
            raise TransientHostError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        if self.on_response is not None:
            self.on_response(method, resp.status_code)
        return self._answer(operation, resp)

    @staticmethod
    def _answer(operation: str, resp: requests.Response) -> dict[str, Any]:
        status = resp.status_code
        text = (resp.text or "")[:_ERROR_TEXT_LIMIT]
        if status == 413:
            raise PermanentHostError(f"{operation}: HTTP 413: the request is larger than the "
                                     "web service's MaxLength (host.otobo.max_length must not "
                                     "exceed it)", status=413, body=text)
        if status >= 500 or status in (408, 429):
            try:
                fault = resp.json()
            except ValueError:
                fault = None
            detail = fault.get("faultstring") if isinstance(fault, dict) else None
            raise TransientHostError(f"{operation}: HTTP {status} {detail or text}".rstrip(),
                                     status=status, body=text)
        if status != 200:
            hint = ""
            if 300 <= status < 400:
                hint = f" (redirect to {resp.headers.get('Location', '?')}; check host.url)"
            raise PermanentHostError(f"{operation}: HTTP {status} {text}{hint}".rstrip(),
                                     status=status, body=text)
        try:
            answer = resp.json()
        except ValueError:
            raise PermanentHostError(f"{operation}: the answer is not JSON", status=status,
                                     body=text) from None
        if not isinstance(answer, dict):
            raise PermanentHostError(f"{operation}: unexpected answer {text}", status=status)
        error = answer.get("Error")
        if isinstance(error, dict):
            raise OtoboOperationError(operation, str(error.get("ErrorCode") or "Unknown"),
                                      str(error.get("ErrorMessage") or ""))
        return answer
