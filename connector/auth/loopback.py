"""Google's sign-in for installed apps: the browser comes back to a loopback address.

Google offers no device flow for the Gmail scope, so ``accounts authorize`` for a
``google`` account with ``flow: refresh_token`` runs the "loopback IP address" flow Google
documents for desktop apps (RFC 8252 section 7.3, with PKCE, RFC 7636): the bridge listens on
127.0.0.1 on a free port, prints the sign-in URL, and the browser is sent back there with the
code once the person consented. On a server without a browser, forward the port first
(``ssh -L PORT:127.0.0.1:PORT server``); the URL names it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from connector.errors import TokenError

_DONE_PAGE = (b"<!doctype html><title>postmaster-bridge</title><p>Signed in. You can close this "
              b"window; the bridge continues in the terminal.</p>")


class _Catcher(HTTPServer):
    result: dict[str, str]
    arrived: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Catcher

    def log_message(self, format: str, *args: Any) -> None:  # the query holds the code
        pass

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.result = query
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_DONE_PAGE)))
        self.end_headers()
        self.wfile.write(_DONE_PAGE)
        self.server.arrived.set()


def pkce_pair() -> tuple[str, str]:
    """RFC 7636: a random verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_in_in_browser(*, authorization_url: str, client_id: str, scopes: tuple[str, ...],
                       login_hint: str, show: Callable[[str, int], None],
                       timeout: float = 600.0) -> tuple[str, str, str]:
    """Runs the browser part; returns (code, redirect_uri, code_verifier) to redeem."""
    catcher = _Catcher(("127.0.0.1", 0), _Handler)
    catcher.arrived = threading.Event()
    catcher.result = {}
    port = catcher.server_address[1]
    redirect_uri = f"http://127.0.0.1:{port}"
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    url = authorization_url + "?" + urlencode({
        "client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code",
        "scope": " ".join(scopes), "access_type": "offline", "prompt": "consent",
        "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
        "login_hint": login_hint})
    thread = threading.Thread(target=catcher.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        show(url, port)
        if not catcher.arrived.wait(timeout):
            raise TokenError("nobody signed in within the time allowed")
    finally:
        catcher.shutdown()
        catcher.server_close()
    result = catcher.result
    if result.get("state") != state:
        raise TokenError("the sign-in came back with a different state (not our request)")
    if "error" in result:
        raise TokenError(f"the sign-in was refused: {result['error']}")
    return result["code"], redirect_uri, verifier
