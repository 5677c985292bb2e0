"""Token renewal timing, SASL initial responses and the remedies for refused grants."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from oauth_double import OAuthDouble
from oauth_support import generic_settings

from connector.auth import sasl
from connector.auth.base import REFRESH_MARGIN, TokenFile, TokenSource
from connector.auth.generic import GenericProvider
from connector.auth.remedies import remedy
from connector.auth.settings import OAuth2Settings
from connector.errors import AuthenticationError


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_is_renewed_shortly_before_it_expires(oauth_server: OAuthDouble,
                                                      tmp_path: Path) -> None:
    oauth_server.add_client("bridge-renew", secret="s3cret", app_username="renew")
    clock = Clock(1_000_000.0)
    settings = generic_settings(oauth_server, "renew", tmp_path, client_id="bridge-renew")
    source = TokenSource(GenericProvider(settings, clock=clock), clock=clock)
    first = source.token()
    assert first.expires_at == clock.now + oauth_server.lifetime
    clock.now = first.expires_at - REFRESH_MARGIN - 1  # still comfortably valid
    assert source.token() is first
    clock.now += 2  # within the margin: a new one before the old one dies mid-login
    second = source.token()
    assert second.value != first.value and source.fetches == 2
    # A refusal of a token another thread already replaced does not fetch again.
    assert source.refresh(first) is second and source.fetches == 2


def test_sasl_initial_responses() -> None:
    assert sasl.xoauth2("someone@example.com", "tok") == \
        b"user=someone@example.com\x01auth=Bearer tok\x01\x01"
    # RFC 7628 section 3.1: gs2 header with "=" and "," escaped in the authzid.
    assert sasl.oauthbearer("a,b=c@example.com", "tok", "imap.example.com", 993) == (
        b"n,a=a=2Cb=3Dc@example.com,\x01host=imap.example.com\x01port=993\x01"
        b"auth=Bearer tok\x01\x01")
    assert base64.b64encode(sasl.xoauth2("u", "t"))  # bytes, ready for base64


@pytest.mark.parametrize(("announced", "preference", "chosen"), [
    (["PLAIN", "XOAUTH2", "OAUTHBEARER"], "auto", "OAUTHBEARER"),
    (["PLAIN", "XOAUTH2"], "auto", "XOAUTH2"),  # Exchange Online
    (["XOAUTH2", "OAUTHBEARER"], "xoauth2", "XOAUTH2"),
])
def test_mechanism_follows_the_announcement(announced: list[str], preference: str,
                                            chosen: str) -> None:
    assert sasl.choose_mechanism(announced, preference, "imap.example.com:993") == chosen


def test_a_server_without_oauth_mechanisms_is_named() -> None:
    with pytest.raises(AuthenticationError, match="neither SASL OAUTHBEARER nor XOAUTH2"):
        sasl.choose_mechanism(["PLAIN", "LOGIN"], "auto", "mail.example.com:993")
    with pytest.raises(AuthenticationError, match="does not announce SASL OAUTHBEARER"):
        sasl.choose_mechanism(["XOAUTH2"], "oauthbearer", "outlook.office365.com:993")


def _settings(**values: object) -> OAuth2Settings:
    fields: dict[str, object] = {"account": "support", "provider": "microsoft",
                                 "flow": "client_credentials", "username": "s@contoso.com",
                                 "client_id": "app-1", "tenant": "contoso.onmicrosoft.com"}
    fields.update(values)
    return OAuth2Settings(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "error", "description", "words"), [
    (_settings(), "invalid_client", "AADSTS7000222: The provided client secret keys for app "
     "'app-1' are expired.", "Certificates & secrets"),
    (_settings(), "invalid_grant", "AADSTS65001: The user or administrator has not consented",
     "Grant admin consent"),
    (_settings(flow="device_code"), "invalid_grant", "AADSTS50173: The provided grant has "
     "expired due to it being revoked", "accounts authorize support"),
    (_settings(provider="generic", flow="refresh_token"), "invalid_grant", "Token is not "
     "active", "accounts authorize support"),
])
def test_remedies_say_what_to_do(settings: OAuth2Settings, error: str, description: str,
                                 words: str) -> None:
    fix = remedy(settings, error, description)
    assert fix is not None and words in fix
    assert "postmaster-bridge accounts enable support" in fix


@pytest.mark.parametrize(("error", "description"), [
    ("temporarily_unavailable", ""),
    ("server_error", "AADSTS50000: There was an error issuing a token."),
    ("authorization_pending", "AADSTS70016: Authorization is pending."),
])
def test_passing_troubles_have_no_remedy(error: str, description: str) -> None:
    assert remedy(_settings(), error, description) is None


def test_token_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "state" / "oauth2" / "a.json")
    store.update(refresh_token="one")
    store.update(identity="x")
    assert store.load() == {"refresh_token": "one", "identity": "x"}
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in store.path.parent.iterdir()] == ["a.json"]
