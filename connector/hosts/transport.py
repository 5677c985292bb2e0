"""One host's HTTP calls through a ``requests`` connection adapter, without ``Session.request``.

Why: ``Session.request`` redoes per call what is the same for every call to one helpdesk API
(merging session and request settings, hooks, cookie jars, redirect checks, re-parsing and
re-quoting the URL, reading the proxy environment), which measured about 40 % of the client's
CPU per request (bench/http_client.py). :class:`HostTransport` computes the fixed parts once
(headers, proxies, TLS settings, the URL prefix) and hands a ``PreparedRequest`` straight to
``session.get_adapter(url).send(...)``, the same ``HTTPAdapter.send`` (connection pool,
timeouts, TLS verification) that ``Session.send`` calls; test mocks that patch it
(``responses``) see every request as before.

What is left out on purpose, because helpdesk API calls never need it:

- cookies: nothing is sent from, or kept in, the session's cookie jar (the API authenticates
  every call with its ``Authorization`` header);
- redirects: never followed (as before: ``allow_redirects=False``); a 3xx answer is returned
  for the caller to treat as an error;
- ``.netrc`` and ``session.auth``: the caller sets ``Authorization`` itself;
- the environment (proxies, ``REQUESTS_CA_BUNDLE``) is read once, when the transport is built,
  and only if ``session.trust_env`` is set; ``session.headers`` too are taken at that moment.

Session response hooks (``session.hooks["response"]``) still run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

import requests
from requests.hooks import dispatch_hook
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies

#: Paths made only of these characters come out of requests' URL preparation unchanged, so
#: ``prefix + path`` can skip it. Anything else (a ``next_page`` link with its own query, an
#: escaped or non-ASCII path) goes through ``PreparedRequest.prepare_url`` as before.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*\Z")

Timeout = float | tuple[float, float]


class HostTransport:
    """Sends requests to one origin (``base_url``) with fixed settings. Thread-safe: nothing
    changes after construction."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        *,
        timeout: Timeout,
        verify: bool | str = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._cert = session.cert
        env_proxies: dict[str, str] = {}
        if session.trust_env:
            env_proxies = get_environ_proxies(self.base_url)
            if verify is True:
                verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                          or os.environ.get("CURL_CA_BUNDLE") or True)
        self.verify = verify
        # As Session.merge_environment_settings: the environment's proxies win over the
        # session's own.
        self.proxies: dict[str, str] = {**session.proxies, **env_proxies}
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(session.headers)
        merged.update(headers or {})
        for name in [k for k, v in merged.items() if v is None]:
            del merged[name]  # None removes a session header, as in requests
        self._headers = merged
        self._prefix = self._prepared_prefix(self.base_url)

    @staticmethod
    def _prepared_prefix(base_url: str) -> str | None:
        """``base_url/`` as requests prepares it (host lower-cased, IDNA, quoting), or None
        when a base with a query or fragment makes plain concatenation unsafe."""
        parts = urlsplit(base_url)
        if parts.query or parts.fragment or "?" in base_url or "#" in base_url:
            return None
        prepared = requests.PreparedRequest()
        prepared.prepare_url(base_url + "/", None)
        url = prepared.url or ""
        return url if url.endswith("/") else None

    def full_url(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """``url`` with ``params``, exactly as ``requests`` would send it."""
        prefix = self._prefix
        if prefix is not None and url.startswith(self.base_url + "/"):
            path = url[len(self.base_url) + 1:]
            plain_params = params is None or all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()
            )
            if plain_params and _PLAIN_PATH.match(path):
                # urlencode quotes everything but unreserved characters, which is what
                # requests' requote_uri then leaves alone: the result is the same string.
                query = urlencode(list(params.items())) if params else ""
                return prefix + path + ("?" + query if query else "")
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, params)
        return prepared.url or url

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One exchange; the whole answer is read before returning, so the connection goes
        back to the pool. Raises what ``requests`` raises (``requests.RequestException``)."""
        method = method.upper()
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = self.full_url(url, params)
        merged = self._headers.copy()
        if headers:
            merged.update(headers)
        if body:
            merged["Content-Length"] = str(len(body))
        else:
            # requests sends an empty body as none, with a zero length on methods that may
            # carry one.
            body = None
            if method not in ("GET", "HEAD") and merged.get("Content-Length") is None:
                merged["Content-Length"] = "0"
        prepared.headers = merged
        prepared.body = body
        adapter = self.session.get_adapter(prepared.url)
        options = {"stream": False, "timeout": self.timeout, "verify": self.verify,
                   "cert": self._cert, "proxies": self.proxies}
        response = adapter.send(prepared, **options)
        if self.session.hooks.get("response"):
            response = dispatch_hook("response", self.session.hooks, response, **options)
        response.content  # noqa: B018 - reads the answer and frees the connection
        return response
