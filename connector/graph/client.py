"""Microsoft Graph over HTTP: bearer tokens from the account's token source, one new token when
Graph says the token is invalid (401), throttling obeyed (429/503/504 with ``Retry-After``, as
"Microsoft Graph throttling guidance" asks), paging through ``@odata.nextLink``.

Graph errors are ``{"error": {"code": ..., "message": ...}}``; they come back as
``GraphError`` with the status and code, so callers decide (404: the message is gone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from connector.auth import token_source
from connector.auth.http import make_session
from connector.auth.settings import OAuth2Settings
from connector.errors import AuthenticationError, FetchError
from connector.hosts.retry import parse_retry_after

log = logging.getLogger(__name__)

#: Immutable ids stay the same when a message moves between folders ("Obtain immutable
#: identifiers for Outlook resources"): a message's ref survives our own move.
IMMUTABLE_IDS = 'IdType="ImmutableId"'
THROTTLED = (429, 503, 504)
#: A throttled request is retried this often, each after the Retry-After Graph gave (or the
#: backoff below); longer waits than MAX_WAIT end the pass instead of holding the thread.
MAX_ATTEMPTS = 6
MAX_WAIT = 300.0
#: Graph takes at most 20 requests in one $batch.
BATCH_SIZE = 20


class GraphError(FetchError):
    def __init__(self, message: str, *, status: int, code: str = "",
                 retry_after: float | None = None) -> None:
        self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)


class GraphClient:
    """Requests on behalf of one account (``/users/{mailbox}`` is the base of every path)."""

    def __init__(self, *, base_url: str, mailbox: str, oauth2: OAuth2Settings,
                 ca_file: str | None, timeout: float, account: str,
                 verify_tls: bool = True, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.user_path = f"/users/{quote(mailbox, safe='@')}"
        self.oauth2 = oauth2
        self.timeout = timeout
        self.account = account
        self.session = session or make_session(self.base_url, ca_file, verify=verify_tls)
        self.sleep = sleep
        self.requests = 0
        self.throttled = 0

    def url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            # An @odata.nextLink / deltaLink (or $batch) is a whole URL; the bearer token goes to
            # the Graph endpoint the account names only, whatever a response says.
            if not path.startswith(self.base_url + "/"):
                raise FetchError(f"{self.account}: Graph sent a link outside "
                                 f"{self.base_url}: {path.split('?')[0]}")
            return path
        return f"{self.base_url}{self.user_path}{path}"

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                json: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                stream: bool = False) -> requests.Response:
        source = token_source(self.oauth2)
        token = source.token()
        refreshed = False
        url = self.url(path)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            sent = {"Authorization": f"Bearer {token.value}", "Prefer": IMMUTABLE_IDS,
                    "Accept": "application/json", **(headers or {})}
            try:
                self.requests += 1
                response = self.session.request(method, url, params=params, json=json,
                                                data=data, headers=sent, timeout=self.timeout,
                                                stream=stream)
            except requests.RequestException as exc:
                raise FetchError(f"{self.account}: Graph {method} {path}: cannot connect: "
                                 f"{type(exc).__name__}: {exc}") from exc
            if response.status_code == 401 and not refreshed:
                # Expired or revoked early: one new token, then the same request again.
                response.close()
                token = source.refresh(token)
                refreshed = True
                continue
            if response.status_code in THROTTLED:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                wait = min(2.0 ** attempt, 60.0) if wait is None else wait
                self.throttled += 1
                response.close()
                if wait > MAX_WAIT or attempt == MAX_ATTEMPTS:
                    raise GraphError(f"{self.account}: Graph {method} {path}: throttled "
                                     f"({response.status_code}); retry after {wait:.0f} s",
                                     status=response.status_code, retry_after=wait)
                log.info("graph throttled account=%s status=%d retry_after=%.1fs",
                         self.account, response.status_code, wait)
                self.sleep(wait)
                continue
            if response.status_code >= 400:
                raise self._error(method, path, response)
            return response
        raise AssertionError("unreachable")

    def _error(self, method: str, path: str, response: requests.Response) -> GraphError:
        try:
            body = response.json().get("error") or {}
        except ValueError:
            body = {}
        code = str(body.get("code") or "")
        message = str(body.get("message") or response.reason or "")
        text = f"{self.account}: Graph {method} {path}: {response.status_code} {code} {message}"
        if response.status_code in (401, 403):
            hint = (" (the app needs the application permission Mail.ReadWrite, and Mail.Send "
                    "to reply, granted by an admin; an application access policy may also "
                    "exclude this mailbox)" if response.status_code == 403 else "")
            return _AuthGraphError(text + hint, status=response.status_code, code=code)
        return GraphError(text, status=response.status_code, code=code)

    def batch(self, requests_: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """JSON batching ("Combine multiple requests in one HTTP call"): up to BATCH_SIZE
        requests (``id``, ``method``, ``url`` relative to the account's ``/users/{id}``,
        optional ``body``) in one POST; returns each answer by id. Answers throttled inside
        the batch (429/503 with ``Retry-After``) are sent again after the longest wait asked,
        up to MAX_ATTEMPTS times; what is still throttled then comes back as it is."""
        pending = {r["id"]: r for r in requests_}
        answers: dict[str, dict[str, Any]] = {}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            body = {"requests": [
                {"id": r["id"], "method": r["method"], "url": self.user_path + r["url"],
                 "headers": {"Content-Type": "application/json", "Prefer": IMMUTABLE_IDS},
                 **({"body": r["body"]} if "body" in r else {})}
                for r in pending.values()]}
            batch_url = f"{self.base_url}/$batch"
            data = self.request("POST", batch_url, json=body).json()
            waits = []
            for answer in data.get("responses") or []:
                answers[str(answer.get("id"))] = answer
                if int(answer.get("status", 0)) in THROTTLED and attempt < MAX_ATTEMPTS:
                    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
                    waits.append(parse_retry_after(headers.get("retry-after")) or 2.0)
                else:
                    pending.pop(str(answer.get("id")), None)
            if not pending or not waits:
                break
            wait = max(waits)
            if wait > MAX_WAIT:
                break
            self.throttled += 1
            log.info("graph batch throttled account=%s items=%d retry_after=%.1fs",
                     self.account, len(pending), wait)
            self.sleep(wait)
        return answers

    def get_json(self, path: str, params: Mapping[str, str] | None = None, *,
                 headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        data = self.request("GET", path, params=params, headers=headers).json()
        return data if isinstance(data, dict) else {}

    def pages(self, path: str, params: Mapping[str, str] | None = None, *,
              page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a collection, following ``@odata.nextLink`` (which carries the
        query itself, so ``params`` go with the first request only). ``page_size`` asks for
        that many items a page (``Prefer: odata.maxpagesize``, sent with every page)."""
        headers = {"Prefer": f"{IMMUTABLE_IDS}, odata.maxpagesize={page_size}"} \
            if page_size else None
        page = self.get_json(path, params, headers=headers)
        yield page
        while page.get("@odata.nextLink"):
            page = self.get_json(str(page["@odata.nextLink"]), headers=headers)
            yield page


class _AuthGraphError(GraphError, AuthenticationError):
    """Graph refused the token or the permission: an authentication problem."""
