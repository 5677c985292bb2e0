"""An OAuth2 authorization server for the tests, on 127.0.0.1, answering as the real issuers
document:

- generic RFC 6749 token endpoint ``/token`` (client credentials, refresh token, RFC 8628
  device code from ``/device``) and RFC 7662 introspection ``/introspect`` (which Dovecot's
  ``passdb oauth2`` calls to validate every token this server issued, from any route);
- Microsoft Entra ID under ``/{tenant}/``: OpenID configuration
  (``/v2.0/.well-known/openid-configuration``), ``/oauth2/v2.0/token`` and
  ``/oauth2/v2.0/devicecode``, with Entra's error shapes (``error``, ``error_description``
  starting ``AADSTSnnnn:``, ``error_codes``, ``trace_id``, ``correlation_id``) and JWT access
  tokens carrying ``roles`` (app-only) or ``scp`` (delegated);
- Google under ``/google/token``: the JWT-bearer grant of a service account (the assertion's
  RS256 signature is checked against the key the test registered, and domain-wide delegation
  must be granted for the client and scope) and the installed-app refresh grant, with Google's
  error texts (``Token has been expired or revoked.``, ``Client is unauthorized to retrieve
  access tokens using this method...``).

Plain HTTP (for Dovecot) and HTTPS (msal accepts nothing else) listen side by side and share
one state. Token lifetimes follow the shared ``now()``, which tests can move forward.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
from dovecot import HOST, TestPki

GOOGLE_UNAUTHORIZED = ("Client is unauthorized to retrieve access tokens using this method, or "
                       "client not authorized for any of the scopes requested.")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """JWT-shaped token (the bridge only reads claims; the double validates by lookup)."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "test"}
    return ".".join((_b64url(json.dumps(header).encode()), _b64url(json.dumps(claims).encode()),
                     _b64url(secrets.token_bytes(32))))


@dataclass
class IssuedToken:
    value: str
    username: str
    client_id: str
    scope: str
    expires_at: float
    active: bool = True


@dataclass
class RefreshGrant:
    username: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class DeviceRequest:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    username: str | None = None  # set when the person "entered the code"
    declined: bool = False
    polls: int = 0


@dataclass
class Client:
    client_id: str
    secret: str | None = None
    certificate_pem: bytes | None = None  # Entra app credential (its public key checks x5t)
    public_key_pem: bytes | None = None  # Google service account key
    client_email: str = ""
    app_username: str = ""  # whom app-only tokens act for (introspection's username)
    delegation_scopes: set[str] = field(default_factory=set)  # Google domain-wide delegation


class OAuthDouble:
    def __init__(self, pki: TestPki | None = None, *, lifetime: int = 3599) -> None:
        self.pki = pki
        self.lifetime = lifetime
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.refresh: dict[str, RefreshGrant] = {}
        self.devices: dict[str, DeviceRequest] = {}
        self.auth_codes: dict[str, tuple[str, str, str, str, str]] = {}
        self.tenants = {"contoso.onmicrosoft.com", "11111111-2222-3333-4444-555555555555"}
        self.google_users: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.introspections = 0
        self.offset = 0.0
        self.device_interval = 1
        self.lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self.port = 0
        self.tls_port = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> OAuthDouble:
        double = self

        class Handler(_Handler):
            owner = double

        plain = QuietServer((HOST, 0), Handler)
        self.port = plain.server_address[1]
        self._servers.append(plain)
        if self.pki is not None:
            tls = QuietServer((HOST, 0), Handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.pki.cert_file), str(self.pki.key_file))
            tls.socket = context.wrap_socket(tls.socket, server_side=True)
            self.tls_port = tls.server_address[1]
            self._servers.append(tls)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> OAuthDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://{HOST}:{self.tls_port}"

    def now(self) -> float:
        return time.time() + self.offset

    # -- what tests arrange ----------------------------------------------------------------
    def add_client(self, client_id: str | None = None, **values: Any) -> Client:
        client = Client(client_id=client_id or str(uuid.uuid4()), **values)
        with self.lock:
            self.clients[client.client_id] = client
        return client

    def grant_refresh_token(self, username: str, client_id: str, scope: str) -> str:
        value = "rt-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh[value] = RefreshGrant(username, client_id, scope)
        return value

    def revoke_refresh_tokens(self, username: str | None = None) -> None:
        with self.lock:
            for grant in self.refresh.values():
                if username is None or grant.username == username:
                    grant.revoked = True

    def expire_access_tokens(self, username: str | None = None) -> None:
        """The issuer's side of an expired token: introspection says inactive from now on,
        while the bridge still believes it valid (clock skew, early revocation)."""
        with self.lock:
            for token in self.tokens.values():
                if username is None or token.username == username:
                    token.active = False

    def approve_device(self, user_code: str, username: str) -> None:
        with self.lock:
            for request in self.devices.values():
                if request.user_code == user_code:
                    request.username = username
                    return
        raise KeyError(user_code)

    def pending_user_codes(self) -> list[str]:
        with self.lock:
            return [d.user_code for d in self.devices.values() if d.username is None]

    # -- issuing ---------------------------------------------------------------------------
    def issue(self, username: str, client_id: str, scope: str, *, kind: str,
              claims: dict[str, Any] | None = None) -> IssuedToken:
        now = self.now()
        if kind == "google":
            value = "ya29." + secrets.token_urlsafe(40)
        else:
            value = unsigned_jwt({"aud": "https://outlook.office365.com", "iat": int(now),
                                  "nbf": int(now), "exp": int(now + self.lifetime),
                                  **(claims or {})})
        token = IssuedToken(value, username, client_id, scope, now + self.lifetime)
        with self.lock:
            self.tokens[value] = token
        return token

    def introspect(self, value: str) -> dict[str, Any]:
        with self.lock:
            self.introspections += 1
            token = self.tokens.get(value)
        if token is None or not token.active or token.expires_at <= self.now():
            return {"active": False}
        return {"active": True, "username": token.username, "scope": token.scope,
                "client_id": token.client_id, "token_type": "Bearer",
                "exp": int(token.expires_at)}


class _Error(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def aad_error(status: int, error: str, code: int, text: str) -> _Error:
    """Entra ID's error body (Microsoft identity platform, "Error response")."""
    return _Error(status, {
        "error": error, "error_description": f"AADSTS{code}: {text} Trace ID: "
        f"{uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: 2026-12-02 04:00:00Z",
        "error_codes": [code], "timestamp": "2026-12-02 04:00:00Z", "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()), "error_uri": "https://login.microsoftonline.com/"
        "error?code=" + str(code)})


def rfc_error(status: int, error: str, description: str = "") -> _Error:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _Error(status, body)


class QuietServer(ThreadingHTTPServer):
    """A client killed mid-request (the crash test's SIGKILL) is not an error of the double."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: OAuthDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _base(self) -> str:
        tls = isinstance(self.connection, ssl.SSLSocket)
        return self.owner.tls_url if tls else self.owner.url

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.strip("/").split("/")
        try:
            if path == ["google", "auth"]:
                self._google_consent({k: v[0] for k, v in parse_qs(parts.query).items()})
                return
            if len(path) == 4 and path[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                self._send(200, self._openid(path[0]))
                return
            raise rfc_error(404, "not_found")
        except _Error as exc:
            self._send(exc.status, exc.body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        basic = self._basic_auth()
        if basic:
            form.setdefault("client_id", basic[0])
            form.setdefault("client_secret", basic[1])
        path = urlsplit(self.path).path.strip("/").split("/")
        owner = self.owner
        try:
            with owner.lock:
                owner.requests["/".join(path[-3:])] += 1
                if path == ["introspect"]:
                    body = owner.introspect(form.get("token", ""))
                elif path == ["token"]:
                    body = self._generic_token(form)
                elif path == ["device"]:
                    body = self._device(form, self._base() + "/device/verify")
                elif path == ["google", "token"]:
                    body = self._google_token(form)
                elif len(path) == 4 and path[1:] == ["oauth2", "v2.0", "token"]:
                    body = self._microsoft_token(path[0], form)
                elif len(path) == 4 and path[1:] == ["oauth2", "v2.0", "devicecode"]:
                    self._tenant(path[0])
                    body = self._device(form, "https://microsoft.com/devicelogin")
                    body["message"] = (
                        "To sign in, use a web browser to open the page "
                        f"https://microsoft.com/devicelogin and enter the code "
                        f"{body['user_code']} to authenticate.")
                else:
                    raise rfc_error(404, "not_found")
            self._send(200, body)
        except _Error as exc:
            self._send(exc.status, exc.body)

    def _basic_auth(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        from urllib.parse import unquote_plus

        return unquote_plus(user), unquote_plus(password)

    # -- generic RFC 6749 ------------------------------------------------------------------
    def _client(self, form: dict[str, str], *, secret_required: bool) -> Client:
        client = self.owner.clients.get(form.get("client_id", ""))
        if client is None or (secret_required and client.secret is not None
                              and form.get("client_secret") != client.secret):
            raise rfc_error(401, "invalid_client", "Client authentication failed")
        return client

    def _token_body(self, token: IssuedToken, refresh: str | None = None) -> dict[str, Any]:
        body = {"access_token": token.value, "token_type": "Bearer",
                "expires_in": self.owner.lifetime, "scope": token.scope}
        if refresh:
            body["refresh_token"] = refresh
        return body

    def _generic_token(self, form: dict[str, str]) -> dict[str, Any]:
        owner = self.owner
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client = self._client(form, secret_required=True)
            if client.secret is None:
                raise rfc_error(401, "invalid_client", "Client authentication failed")
            token = owner.issue(client.app_username, client.client_id, form.get("scope", ""),
                                kind="generic", claims={"azp": client.client_id})
            return self._token_body(token)
        if grant == "refresh_token":
            client = self._client(form, secret_required=True)
            rt = owner.refresh.get(form.get("refresh_token", ""))
            if rt is None or rt.revoked or rt.client_id != client.client_id:
                raise rfc_error(400, "invalid_grant", "Token is not active")
            token = owner.issue(rt.username, rt.client_id, rt.scope, kind="generic",
                                claims={"preferred_username": rt.username, "scope": rt.scope})
            return self._token_body(token)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_token(form, kind="generic")
        raise rfc_error(400, "unsupported_grant_type")

    def _device(self, form: dict[str, str], verification_uri: str) -> dict[str, Any]:
        owner = self.owner
        client = self._client(form, secret_required=False)
        request = DeviceRequest(
            device_code=secrets.token_urlsafe(32),
            user_code="".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8)),
            client_id=client.client_id, scope=form.get("scope", ""),
            expires_at=owner.now() + 900)
        owner.devices[request.device_code] = request
        return {"device_code": request.device_code, "user_code": request.user_code,
                "verification_uri": verification_uri, "expires_in": 900,
                "interval": owner.device_interval}

    def _device_token(self, form: dict[str, str], *, kind: str,
                      tenant: str = "") -> dict[str, Any]:
        owner = self.owner
        request = owner.devices.get(form.get("device_code", ""))
        microsoft = kind == "microsoft"
        if request is None or request.expires_at <= owner.now():
            raise (aad_error(400, "expired_token", 70019, "Verification code expired.")
                   if microsoft else rfc_error(400, "expired_token"))
        request.polls += 1
        if request.declined:
            raise (aad_error(400, "authorization_declined", 70000, "The user declined.")
                   if microsoft else rfc_error(400, "access_denied"))
        if request.username is None:
            raise (aad_error(400, "authorization_pending", 70016, "OAuth 2.0 device flow "
                             "error. Authorization is pending. Continue polling.")
                   if microsoft else rfc_error(400, "authorization_pending"))
        del owner.devices[request.device_code]
        scope = " ".join(s for s in request.scope.split()
                         if s not in ("openid", "profile", "offline_access"))
        rt = owner.grant_refresh_token(request.username, request.client_id, scope)
        if microsoft:
            return self._microsoft_user_tokens(tenant, request.client_id, request.username,
                                               scope, rt)
        token = owner.issue(request.username, request.client_id, scope, kind=kind,
                            claims={"preferred_username": request.username, "scope": scope})
        return self._token_body(token, rt)

    # -- Microsoft Entra ID ----------------------------------------------------------------
    def _tenant(self, tenant: str) -> None:
        if tenant not in self.owner.tenants and tenant not in ("common", "organizations"):
            raise aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check "
                            "to make sure you have the correct tenant ID and are signing into "
                            "the correct cloud.")

    def _openid(self, tenant: str) -> dict[str, Any]:
        self._tenant(tenant)
        base = f"{self.owner.tls_url}/{tenant}"
        return {"token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0", "jwks_uri": f"{base}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "private_key_jwt",
                                                          "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token",
                                             "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com"}

    def _microsoft_client(self, tenant: str, form: dict[str, str], *,
                          confidential: bool) -> Client:
        client = self.owner.clients.get(form.get("client_id", ""))
        if client is None:
            raise aad_error(400, "unauthorized_client", 700016, f"Application with "
                            f"identifier '{form.get('client_id')}' was not found in the "
                            f"directory '{tenant}'. This can happen if the application has not "
                            "been installed by the administrator of the tenant or consented to "
                            "by any user in the tenant.")
        if not confidential:
            return client
        assertion = form.get("client_assertion")
        if assertion:
            if client.certificate_pem is None:
                raise aad_error(401, "invalid_client", 700027, "Client assertion failed "
                                "signature validation.")
            from cryptography import x509

            cert = x509.load_pem_x509_certificate(client.certificate_pem)
            try:
                pyjwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"],
                             audience=f"{self.owner.tls_url}/{tenant}/oauth2/v2.0/token")
            except pyjwt.PyJWTError as exc:
                raise aad_error(401, "invalid_client", 700027, "Client assertion failed "
                                f"signature validation. ({exc})") from None
        elif client.secret is None or form.get("client_secret") != client.secret:
            raise aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. "
                            "Ensure the secret being sent in the request is the client secret "
                            "value, not the client secret ID, for a secret added to app "
                            f"'{client.client_id}'.")
        return client

    def _microsoft_token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        owner = self.owner
        self._tenant(tenant)
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client = self._microsoft_client(tenant, form, confidential=True)
            scope = form.get("scope", "")
            if not scope.endswith("/.default"):
                raise aad_error(400, "invalid_scope", 1002012, f"The provided value for scope "
                                f"{scope} is not valid. Client credential flows must have a "
                                "scope value with /.default suffixed to the resource "
                                "identifier (application ID URI).")
            roles = ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"] \
                if "outlook" in scope else ["Mail.ReadWrite", "Mail.Send"]
            token = owner.issue(client.app_username, client.client_id, scope,
                                kind="microsoft", claims={
                                    "appid": client.client_id, "app_displayname": "Helpdesk "
                                    "bridge", "roles": roles, "tid": tenant,
                                    "idtyp": "app"})
            return {"token_type": "Bearer", "expires_in": owner.lifetime,
                    "ext_expires_in": owner.lifetime, "access_token": token.value}
        if grant == "refresh_token":
            client = self._microsoft_client(tenant, form, confidential=False)
            rt = owner.refresh.get(form.get("refresh_token", ""))
            if rt is None or rt.revoked:
                raise aad_error(400, "invalid_grant", 700082, "The refresh token has expired "
                                "due to inactivity. The token was issued on "
                                "2026-06-01T00:00:00Z and was inactive for 90.00:00:00.")
            del owner.refresh[form["refresh_token"]]  # Entra rotates refresh tokens
            new_rt = owner.grant_refresh_token(rt.username, client.client_id, rt.scope)
            return self._microsoft_user_tokens(tenant, client.client_id, rt.username,
                                               rt.scope, new_rt)
        if grant == "device_code":
            raise aad_error(400, "unsupported_grant_type", 70003, "The app requested an "
                            "unsupported grant type.")
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            self._microsoft_client(tenant, form, confidential=False)
            return self._device_token(form, kind="microsoft", tenant=tenant)
        raise aad_error(400, "unsupported_grant_type", 70003, "The app requested an "
                        "unsupported grant type.")

    def _microsoft_user_tokens(self, tenant: str, client_id: str, username: str, scope: str,
                               refresh: str) -> dict[str, Any]:
        owner = self.owner
        now = int(owner.now())
        oid = str(uuid.uuid5(uuid.NAMESPACE_DNS, username))
        tid = "11111111-2222-3333-4444-555555555555"
        token = owner.issue(username, client_id, scope, kind="microsoft", claims={
            "upn": username, "scp": " ".join(s.rsplit("/", 1)[-1] for s in scope.split()),
            "oid": oid, "tid": tid, "appid": client_id})
        id_token = unsigned_jwt({
            "aud": client_id, "iss": f"{owner.tls_url}/{tid}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "name": username.split("@")[0], "oid": oid,
            "preferred_username": username, "sub": secrets.token_urlsafe(16), "tid": tid,
            "ver": "2.0"})
        return {"token_type": "Bearer", "scope": scope, "expires_in": owner.lifetime,
                "ext_expires_in": owner.lifetime, "access_token": token.value,
                "refresh_token": refresh, "id_token": id_token,
                "client_info": _b64url(json.dumps({"uid": oid, "utid": tid}).encode())}

    # -- Google ----------------------------------------------------------------------------
    def _google_consent(self, query: dict[str, str]) -> None:
        """The person at Google's sign-in page consents (as ``login_hint``); the browser is
        sent back to the loopback redirect with a code bound to the PKCE challenge."""
        owner = self.owner
        client = owner.clients.get(query.get("client_id", ""))
        redirect = query.get("redirect_uri", "")
        if client is None or not redirect.startswith("http://127.0.0.1:") or \
                query.get("code_challenge_method") != "S256" or \
                query.get("access_type") != "offline":
            raise rfc_error(400, "invalid_request", "Error 400: invalid_request")
        code = "4/0A" + secrets.token_urlsafe(30)
        with owner.lock:
            owner.auth_codes[code] = (client.client_id, redirect, query["code_challenge"],
                                      query.get("login_hint", ""), query.get("scope", ""))
        target = f"{redirect}?state={query.get('state', '')}&code={code}" \
                 f"&scope={query.get('scope', '')}"
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _google_token(self, form: dict[str, str]) -> dict[str, Any]:
        owner = self.owner
        grant = form.get("grant_type")
        if grant == "authorization_code":
            import hashlib

            bound = owner.auth_codes.pop(form.get("code", ""), None)
            client = owner.clients.get(form.get("client_id", ""))
            if client is None or form.get("client_secret") != client.secret:
                raise rfc_error(401, "invalid_client", "The OAuth client was not found.")
            verifier = form.get("code_verifier", "")
            challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
            if bound is None or bound[0] != client.client_id or \
                    bound[1] != form.get("redirect_uri") or bound[2] != challenge:
                raise rfc_error(400, "invalid_grant", "Bad Request")
            username, scope = bound[3], bound[4]
            rt = owner.grant_refresh_token(username, client.client_id, scope)
            token = owner.issue(username, client.client_id, scope, kind="google")
            return {"access_token": token.value, "expires_in": owner.lifetime,
                    "refresh_token": rt, "scope": scope, "token_type": "Bearer"}
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            assertion = form.get("assertion", "")
            unverified = pyjwt.decode(assertion, options={"verify_signature": False})
            client = next((c for c in owner.clients.values()
                           if c.client_email == unverified.get("iss")), None)
            if client is None or client.public_key_pem is None:
                raise rfc_error(400, "invalid_grant", "Invalid JWT Signature.")
            try:
                # Google: the assertion's "aud" is always its own token URI, wherever the
                # request goes ("Preparing to make an authorized API call").
                claims = pyjwt.decode(assertion, client.public_key_pem, algorithms=["RS256"],
                                      audience="https://oauth2.googleapis.com/token")
            except pyjwt.PyJWTError:
                raise rfc_error(400, "invalid_grant", "Invalid JWT Signature.") from None
            subject = claims.get("sub")
            scope = claims.get("scope", "")
            if subject and subject not in owner.google_users:
                raise rfc_error(400, "invalid_grant", "Invalid email or User ID")
            if not set(scope.split()) <= client.delegation_scopes:
                raise rfc_error(401, "unauthorized_client", GOOGLE_UNAUTHORIZED)
            token = owner.issue(subject or client.client_email, client.client_id, scope,
                                kind="google")
            return {"access_token": token.value, "expires_in": owner.lifetime,
                    "token_type": "Bearer"}
        if grant == "refresh_token":
            client = owner.clients.get(form.get("client_id", ""))
            if client is None or form.get("client_secret") != client.secret:
                raise rfc_error(401, "invalid_client", "The OAuth client was not found.")
            rt = owner.refresh.get(form.get("refresh_token", ""))
            if rt is None or rt.revoked or rt.client_id != client.client_id:
                raise rfc_error(400, "invalid_grant", "Token has been expired or revoked.")
            token = owner.issue(rt.username, client.client_id, rt.scope, kind="google")
            return {"access_token": token.value, "expires_in": owner.lifetime,
                    "scope": rt.scope, "token_type": "Bearer"}
        raise rfc_error(400, "unsupported_grant_type", "Invalid grant_type: " + str(grant))
