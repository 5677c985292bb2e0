"""The Microsoft (msal), Google (google-auth) and generic token providers against token
endpoints that answer as Entra ID, Google and RFC 6749/8628 document, over HTTPS on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from dovecot import DovecotServer, MailUser
from dovecot import TestPki as Pki
from oauth_double import OAuthDouble
from oauth_support import approve_when_shown, oauth_account

from connector.auth import make_provider, token_source
from connector.auth.settings import OAuth2Settings
from connector.errors import GrantRevokedError, TokenError
from connector.fetch import open_mailbox

pytestmark = pytest.mark.usefixtures("fresh_token_sources")

TENANT = "contoso.onmicrosoft.com"
MAIL = "https://mail.google.com/"


def _rsa_pem() -> tuple[bytes, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, key


def _self_signed(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge app")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def microsoft(double: OAuthDouble, pki: Pki, tmp: Path, **values: Any) -> OAuth2Settings:
    fields: dict[str, Any] = {
        "account": "m365", "provider": "microsoft", "flow": "client_credentials",
        "username": "support@contoso.com", "tenant": TENANT, "authority_host": double.tls_url,
        "scopes": ("https://outlook.office365.com/.default",), "ca_file": str(pki.ca_file),
        "token_file": tmp / "oauth2" / "m365.json", "timeout": 10.0}
    fields.update(values)
    return OAuth2Settings(**fields)


def google(double: OAuthDouble, pki: Pki, tmp: Path, **values: Any) -> OAuth2Settings:
    fields: dict[str, Any] = {
        "account": "gw", "provider": "google", "flow": "service_account",
        "username": "support@example.com", "subject": "support@example.com",
        "token_url": double.tls_url + "/google/token", "scopes": (MAIL,),
        "ca_file": str(pki.ca_file), "token_file": tmp / "oauth2" / "gw.json", "timeout": 10.0}
    fields.update(values)
    return OAuth2Settings(**fields)


# -- Microsoft: app-only ----------------------------------------------------------------------
def test_microsoft_app_only_with_a_secret_gets_an_app_token(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    app = oauth_server.add_client(secret="app-secret", app_username="support@contoso.com")
    provider = make_provider(microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                                       client_secret="app-secret"))
    token = provider.fetch_token()
    assert token.identity == "Helpdesk bridge"
    assert set(token.scopes) == {"IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"}
    assert token.expires_at > time.time() + 3000
    second = provider.fetch_token()
    assert second.value != token.value  # a fetch never answers from msal's cache


def test_microsoft_app_only_with_a_certificate_signs_a_client_assertion(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    key_pem, key = _rsa_pem()
    cert_pem = _self_signed(key)
    app = oauth_server.add_client(certificate_pem=cert_pem, app_username="support@contoso.com")
    settings = microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                         certificate=(key_pem + cert_pem).decode())
    assert make_provider(settings).fetch_token().value


def test_microsoft_deleted_app_registration_says_to_register_it_again(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    settings = microsoft(oauth_server, pki, tmp_path, client_id="deleted-app",
                         client_secret="x")
    with pytest.raises(GrantRevokedError) as caught:
        make_provider(settings).fetch_token()
    assert "AADSTS700016" in str(caught.value)
    assert "no longer exists" in caught.value.remedy
    assert "postmaster-bridge accounts enable m365" in caught.value.remedy


def test_microsoft_wrong_secret_says_where_to_make_a_new_one(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    app = oauth_server.add_client(secret="right")
    settings = microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                         client_secret="wrong")
    with pytest.raises(GrantRevokedError) as caught:
        make_provider(settings).fetch_token()
    assert "Certificates & secrets" in caught.value.remedy
    assert "wrong" not in str(caught.value)  # the secret itself never shows


def test_microsoft_unknown_tenant_is_reported_not_disabled(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    settings = microsoft(oauth_server, pki, tmp_path, client_id="x", client_secret="y",
                         tenant="nowhere.onmicrosoft.com")
    with pytest.raises(TokenError) as caught:
        make_provider(settings).fetch_token()
    assert not isinstance(caught.value, GrantRevokedError)
    assert "nowhere.onmicrosoft.com" in str(caught.value)


def test_microsoft_app_token_logs_in_to_imap(
        oauth_server: OAuthDouble, oauth_dovecot: DovecotServer, pki: Pki,
        tmp_path: Path) -> None:
    user: MailUser = oauth_dovecot.add_user()
    app = oauth_server.add_client(secret="app-secret", app_username=user.name)
    settings = microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                         client_secret="app-secret", username=user.name, mechanism="xoauth2")
    account = oauth_account(oauth_dovecot, user, settings)
    with open_mailbox(account) as mailbox:
        assert "OK" in mailbox.check()


# -- Microsoft: delegated, device code ---------------------------------------------------------
def test_microsoft_device_code_flow_end_to_end_keeps_the_refresh_token(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    app = oauth_server.add_client()
    settings = microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                         flow="device_code", client_secret="",
                         scopes=("https://outlook.office365.com/IMAP.AccessAsUser.All",
                                 "https://outlook.office365.com/SMTP.Send"))
    provider = make_provider(settings)
    code = provider.start_device_flow()  # type: ignore[attr-defined]
    assert code.verification_uri == "https://microsoft.com/devicelogin"
    assert code.user_code in code.message
    approve_when_shown(oauth_server, "support@contoso.com")
    token = provider.finish_device_flow(code)  # type: ignore[attr-defined]
    assert token.identity == "support@contoso.com"
    assert "https://outlook.office365.com/IMAP.AccessAsUser.All" in token.scopes

    stored = settings.token_file
    assert stored is not None
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert "rt-" in stored.read_text()

    # A restarted bridge: a new provider refreshes with the stored token, silently.
    fresh = make_provider(settings).fetch_token()
    assert fresh.identity == "support@contoso.com" and fresh.value != token.value

    oauth_server.revoke_refresh_tokens("support@contoso.com")
    with pytest.raises(GrantRevokedError) as caught:
        make_provider(settings).fetch_token()
    assert "AADSTS700082" in str(caught.value)
    assert "postmaster-bridge accounts authorize m365" in caught.value.remedy


def test_microsoft_delegated_without_a_sign_in_says_to_authorize(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    app = oauth_server.add_client()
    settings = microsoft(oauth_server, pki, tmp_path, client_id=app.client_id,
                         flow="device_code")
    with pytest.raises(GrantRevokedError, match="accounts authorize m365"):
        make_provider(settings).fetch_token()


# -- Google ------------------------------------------------------------------------------------
def _service_account(double: OAuthDouble, tmp: Path, *, delegated: bool) -> str:
    key_pem, key = _rsa_pem()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    email = "bridge@helpdesk-123.iam.gserviceaccount.com"
    double.add_client("108234567890123456789", client_email=email, public_key_pem=public,
                      delegation_scopes={MAIL} if delegated else set())
    return json.dumps({
        "type": "service_account", "project_id": "helpdesk-123", "private_key_id": "k1",
        "private_key": key_pem.decode(), "client_email": email,
        "client_id": "108234567890123456789", "token_uri": "https://oauth2.googleapis.com/token"})


def test_google_service_account_acts_as_the_mailbox(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    oauth_server.google_users.add("support@example.com")
    settings = google(oauth_server, pki, tmp_path,
                      service_account=_service_account(oauth_server, tmp_path, delegated=True))
    token = make_provider(settings).fetch_token()
    assert token.value.startswith("ya29.")
    assert token.identity == "support@example.com"
    assert oauth_server.introspect(token.value)["username"] == "support@example.com"


def test_google_without_domain_wide_delegation_says_where_to_grant_it(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    oauth_server.google_users.add("support@example.com")
    settings = google(oauth_server, pki, tmp_path,
                      service_account=_service_account(oauth_server, tmp_path, delegated=False))
    with pytest.raises(GrantRevokedError) as caught:
        make_provider(settings).fetch_token()
    assert "unauthorized_client" in str(caught.value)
    assert "Manage domain-wide delegation" in caught.value.remedy
    assert MAIL in caught.value.remedy


def test_google_unknown_mailbox_is_named(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    settings = google(oauth_server, pki, tmp_path, subject="nobody@example.com",
                      service_account=_service_account(oauth_server, tmp_path, delegated=True))
    with pytest.raises(GrantRevokedError, match="Invalid email or User ID"):
        make_provider(settings).fetch_token()


def test_google_installed_app_refresh_token_and_its_revocation(
        oauth_server: OAuthDouble, pki: Pki, tmp_path: Path) -> None:
    client = oauth_server.add_client("123-abc.apps.googleusercontent.com", secret="GOCSPX-x")
    refresh = oauth_server.grant_refresh_token("support@example.com", client.client_id, MAIL)
    settings = google(oauth_server, pki, tmp_path, flow="refresh_token",
                      client_id=client.client_id, client_secret="GOCSPX-x",
                      refresh_token=refresh)
    source = token_source(settings)
    token = source.token()
    assert token.value.startswith("ya29.") and token.scopes == (MAIL,)
    assert source.token() is token  # cached until close to expiry
    oauth_server.revoke_refresh_tokens("support@example.com")
    with pytest.raises(GrantRevokedError) as caught:
        source.refresh(token)
    assert "Token has been expired or revoked" in str(caught.value)
    assert "accounts authorize gw" in caught.value.remedy


# -- generic RFC 8628 ---------------------------------------------------------------------------
def test_generic_device_flow_stores_the_refresh_token_0600(
        oauth_server: OAuthDouble, tmp_path: Path) -> None:
    client = oauth_server.add_client("public-client")
    settings = OAuth2Settings(
        account="idp", provider="generic", flow="refresh_token", username="support",
        client_id=client.client_id, token_url=oauth_server.url + "/token",
        device_authorization_url=oauth_server.url + "/device", scopes=("mail",),
        token_file=tmp_path / "state" / "oauth2" / "idp.json")
    provider = make_provider(settings)
    code = provider.start_device_flow()  # type: ignore[attr-defined]
    approve_when_shown(oauth_server, "support")
    token = provider.finish_device_flow(code)  # type: ignore[attr-defined]
    assert token.identity == "support"
    assert settings.token_file is not None
    assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.token_file.parent.stat().st_mode) == 0o700
    assert make_provider(settings).fetch_token().identity == "support"
