"""Staff commands and forwards act only for an authenticated sender (issue 12, attack 3).

Unit tests of connector/filters/authentication.py (Authentication-Results read with authres,
DKIM checked with dkimpy against DNS answers the tests inject), then the attack end to end: a
spoofed staff From on an untrusted account sends ``#close#`` and a "forward", through a real
Dovecot mailbox into the Zendesk double; and the same mail, proven, does act.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dovecot import DovecotServer, MailUser
from zendesk_double import ZendeskDouble

from connector.config import Config, load_config
from connector.filters.authentication import (
    TAG_STAFF_UNVERIFIED,
    AuthMethod,
    aligned,
    authenticate_sender,
)
from connector.hosts.factory import make_host
from connector.mail.parse import parse_message
from connector.service.filtering import load_rules
from connector.service.pipeline import Pipeline
from connector.service.runner import AccountPoller, AccountSummary
from connector.store.sqlite import SQLiteStore

MTA = "mx.helpdesk.example"
SELECTOR = b"sel2024"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_PRIVATE = _KEY.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
_PUBLIC = base64.b64encode(_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def dns_for(domain: bytes) -> Callable[..., bytes | None]:
    """A DNS that publishes the test key for ``domain`` and nothing else; records queries."""
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        lookup.asked.append(name)  # type: ignore[attr-defined]
        if name == SELECTOR + b"._domainkey." + domain + b".":
            return b"v=DKIM1; k=rsa; p=" + _PUBLIC
        return None
    lookup.asked = []  # type: ignore[attr-defined]
    return lookup


def mail(sender: str, subject: str, body: str, *, headers: tuple[tuple[str, str], ...] = (),
         message_id: str = "m-1@example.com") -> bytes:
    msg = EmailMessage(policy=SMTP)
    for name, value in headers:
        msg[name] = value
    msg["From"] = sender
    msg["To"] = "support@helpdesk.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 03 Jun 2024 10:00:00 +0200"
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content(body)
    return msg.as_bytes()


def dkim_signed(raw: bytes, domain: bytes = b"example.com") -> bytes:
    signature = dkim.sign(raw, SELECTOR, domain, _PRIVATE,
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw


def auth(raw: bytes, **options: Any):  # noqa: ANN201 - SenderAuthentication
    return authenticate_sender(parse_message(raw), **{"trusted": False, **options})


# -- the proof, unit by unit ----------------------------------------------------------------------

ANNA = "Anna <anna@example.com>"


def test_a_from_line_alone_proves_nothing() -> None:
    result = auth(mail(ANNA, "#close#", "done"), authserv_ids=(MTA,))
    assert not result.authenticated and result.method is AuthMethod.NONE
    assert result.address == "anna@example.com"


def test_a_trusted_account_vouches_for_its_senders() -> None:
    result = auth(mail(ANNA, "#close#", "done"), trusted=True)
    assert result.authenticated and result.method is AuthMethod.TRUSTED_ACCOUNT


@pytest.mark.parametrize("results, method", [
    (f"{MTA}; dkim=pass header.d=example.com header.s=sel; spf=pass", AuthMethod.DKIM_RESULT),
    (f"{MTA}; dkim=pass (good) header.i=@mail.example.com", AuthMethod.DKIM_RESULT),
    (f"{MTA}; spf=fail; dmarc=pass (p=reject) header.from=example.com", AuthMethod.DMARC),
])
def test_our_mtas_aligned_dkim_or_dmarc_pass_proves_the_sender(results: str,
                                                                method: AuthMethod) -> None:
    raw = mail(ANNA, "#close#", "done", headers=(("Authentication-Results", results),))
    result = auth(raw, authserv_ids=(MTA,))
    assert result.authenticated and result.method is method, result.detail


@pytest.mark.parametrize("results", [
    "mx.attacker.example; dkim=pass header.d=example.com; dmarc=pass header.from=example.com",
    f"{MTA}; dkim=pass header.d=attacker.example",  # a valid signature, someone else's domain
    f"{MTA}; dkim=fail header.d=example.com; dmarc=fail header.from=example.com",
    f"{MTA}; dmarc=pass header.from=other.example",
    f"{MTA}; spf=pass smtp.mailfrom=example.com",  # SPF says nothing about the From line
    "this is ;; not = a header",
])
def test_results_that_do_not_prove_the_from_are_not_believed(results: str) -> None:
    raw = mail(ANNA, "#close#", "done", headers=(("Authentication-Results", results),))
    assert not auth(raw, authserv_ids=(MTA,)).authenticated


def test_only_the_topmost_result_of_our_mta_counts() -> None:
    # The MTA's own header sits above the copy the sender wrote with the same authserv-id.
    raw = mail(ANNA, "#close#", "done", headers=(
        ("Authentication-Results", f"{MTA}; dkim=fail header.d=example.com"),
        ("Received", "from attacker.example by mx.helpdesk.example"),
        ("Authentication-Results", f"{MTA}; dkim=pass header.d=example.com"),
    ))
    result = auth(raw, authserv_ids=(MTA,))
    assert not result.authenticated
    assert "dkim=fail" in result.detail


def test_results_are_ignored_when_no_authserv_id_is_configured() -> None:
    raw = mail(ANNA, "#close#", "done",
               headers=(("Authentication-Results", f"{MTA}; dkim=pass header.d=example.com"),))
    assert not auth(raw).authenticated


def test_the_bridge_verifies_an_aligned_dkim_signature_itself() -> None:
    dns = dns_for(b"example.com")
    result = auth(dkim_signed(mail(ANNA, "#close#", "done")), dnsfunc=dns)
    assert result.authenticated and result.method is AuthMethod.DKIM_VERIFIED, result.detail
    assert dns.asked == [b"sel2024._domainkey.example.com."]  # type: ignore[attr-defined]


def test_an_altered_or_unaligned_or_unpublished_dkim_signature_proves_nothing() -> None:
    signed = dkim_signed(mail(ANNA, "#close#", "done"))
    altered = signed.replace(b"done", b"gone")
    assert not auth(altered, dnsfunc=dns_for(b"example.com")).authenticated
    unaligned = dkim_signed(mail(ANNA, "#close#", "done"), domain=b"attacker.example")
    dns = dns_for(b"attacker.example")
    result = auth(unaligned, dnsfunc=dns)
    assert not result.authenticated and "not aligned" in result.detail
    assert dns.asked == []  # type: ignore[attr-defined]  # not even looked up
    assert not auth(signed, dnsfunc=dns_for(b"other.example")).authenticated


@pytest.mark.parametrize("d, domain, expected", [
    ("example.com", "example.com", True),
    ("example.com", "mail.example.com", True),
    ("mail.example.com", "example.com", True),
    ("EXAMPLE.com.", "example.COM", True),
    ("example.com", "example.co", False),
    ("attacker.example", "example.com", False),
    ("notexample.com", "example.com", False),
    ("", "example.com", False),
])
def test_alignment(d: str, domain: str, expected: bool) -> None:
    assert aligned(d, domain) is expected


# -- attack 3 end to end --------------------------------------------------------------------------

CUSTOMER = "cliente@cliente.example.it"
VICTIM = "terzo@altro.example.org"


@dataclass
class Bridge:
    config: Config
    store: SQLiteStore
    dnsfunc: Callable[..., bytes | None] | None = None
    poller: AccountPoller = field(init=False)

    def __post_init__(self) -> None:
        account = self.config.accounts[0]
        stage = load_rules(self.config, dnsfunc=self.dnsfunc)
        pipeline = Pipeline(account, self.config.host, self.store, make_host(self.config.host),
                            stage)
        self.poller = AccountPoller(account, self.store, pipeline)

    def poll(self) -> AccountSummary:
        summary = self.poller.poll()
        assert summary.error is None, summary.line()
        return summary


@pytest.fixture
def bridge_for(tmp_path: Path, dovecot: DovecotServer, mailbox_user: MailUser,
               zd: ZendeskDouble) -> Iterator[Callable[..., Bridge]]:
    stores: list[SQLiteStore] = []

    def make(dnsfunc: Callable[..., bytes | None] | None = None) -> Bridge:
        (tmp_path / "imap-password").write_text(mailbox_user.password)
        (tmp_path / "zendesk-token").write_text(zd.api_token)
        data = {
            "store": {"path": str(tmp_path / "ledger.sqlite3")},
            "host": {"type": "zendesk", "url": zd.url, "timeout": 10, "max_attempts": 2,
                     "auth": {"type": "api_token", "email": zd.email,
                              "api_token_file": str(tmp_path / "zendesk-token")}},
            "filters": {"staff": ["@example.com"]},
            "accounts": [{
                "name": "support", "protocol": "imap", "host": "127.0.0.1",
                "port": dovecot.imap_port, "security": "none", "username": mailbox_user.name,
                "password_file": str(tmp_path / "imap-password"), "timeout": 10,
                "authserv_id": MTA,  # untrusted: the default
            }],
        }
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        store = SQLiteStore(config.store.path)
        stores.append(store)
        return Bridge(config, store, dnsfunc)

    yield make
    for store in stores:
        store.close()


def customer_ticket(dovecot: DovecotServer, user: MailUser, bridge: Bridge,
                    zd: ZendeskDouble) -> dict[str, Any]:
    dovecot.append(user, mail(f"Cliente <{CUSTOMER}>", "Stampante guasta",
                              "La stampante non stampa.", message_id="c-1@cliente.example.it"))
    assert bridge.poll().counts["ticketed"] == 1
    [ticket] = zd.tickets()
    return ticket


def close_and_forward(ticket_id: int, *, headers: tuple[tuple[str, str], ...] = (),
                      sign: bool = False) -> list[bytes]:
    close = mail(ANNA, f"Re: [#{ticket_id}] Stampante guasta #close#", "Risolto.",
                 headers=headers, message_id="close-1@example.com")
    forward = mail(ANNA, "Fwd: Fattura", "Per favore gestite voi.\n\n"
                   "---------- Forwarded message ---------\n"
                   f"From: Terzo <{VICTIM}>\nDate: Mon, 3 Jun 2024 at 09:00\n"
                   "Subject: Fattura\nTo: Anna <anna@example.com>\n\nDov'e' la fattura?\n",
                   headers=headers, message_id="fwd-1@example.com")
    return [dkim_signed(close), dkim_signed(forward)] if sign else [close, forward]


def test_spoofed_staff_close_and_forward_act_as_ordinary_mail(
        dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[..., Bridge]) -> None:
    dns = dns_for(b"example.com")  # the real domain publishes its key; the spoof is unsigned
    bridge = bridge_for(dns)
    ticket = customer_ticket(dovecot, mailbox_user, bridge, zd)
    # The attacker even writes an Authentication-Results of their own MTA.
    forged = (("Authentication-Results",
               "mx.attacker.example; dkim=pass header.d=example.com; dmarc=pass"),)
    dovecot.append(mailbox_user, close_and_forward(ticket["id"], headers=forged))

    summary = bridge.poll()

    # The "close" is a note from someone who is not the requester, as for anyone.
    assert summary.counts["noted"] == 1 and summary.counts["ticketed"] == 1, summary.line()
    after = zd.ticket(ticket["id"])
    assert after["status"] not in ("solved", "closed")  # #close# did not act
    assert TAG_STAFF_UNVERIFIED in after["tags"]
    note = after["comments"][-1]
    assert note["public"] is False and "Risolto." in note["plain_body"]
    [forwarded] = [t for t in zd.tickets() if t["id"] != ticket["id"]]
    requester = zd.state()["users"][str(forwarded["requester_id"])]["email"]
    assert requester == "anna@example.com"  # the third party was not made requester
    assert TAG_STAFF_UNVERIFIED in forwarded["tags"]
    assert not [u for u in zd.state()["users"].values() if u["email"] == VICTIM]
    assert dns.asked == []  # type: ignore[attr-defined]  # unsigned: nothing to look up


@pytest.mark.parametrize("proof", ["authentication-results", "dkim"])
def test_the_same_staff_mail_proven_does_act(
        proof: str, dovecot: DovecotServer, mailbox_user: MailUser, zd: ZendeskDouble,
        bridge_for: Callable[..., Bridge]) -> None:
    dns = dns_for(b"example.com")
    bridge = bridge_for(dns)
    ticket = customer_ticket(dovecot, mailbox_user, bridge, zd)
    if proof == "dkim":
        mails = close_and_forward(ticket["id"], sign=True)
    else:
        ours = (("Authentication-Results", f"{MTA}; dkim=pass header.d=example.com"),)
        mails = close_and_forward(ticket["id"], headers=ours)
    dovecot.append(mailbox_user, mails)

    summary = bridge.poll()

    assert summary.counts["noted"] == 1 and summary.counts["ticketed"] == 1, summary.line()
    after = zd.ticket(ticket["id"])
    assert after["status"] == "solved"
    assert TAG_STAFF_UNVERIFIED not in after["tags"]
    [forwarded] = [t for t in zd.tickets() if t["id"] != ticket["id"]]
    assert zd.state()["users"][str(forwarded["requester_id"])]["email"] == VICTIM
    assert bool(dns.asked) is (proof == "dkim")  # type: ignore[attr-defined]


def test_check_warns_when_nothing_can_authenticate_staff(tmp_path: Path) -> None:
    from bridge_cli import cli_output as run_cli

    (tmp_path / "pw").write_text("secret")
    base = {"name": "support", "protocol": "imap", "host": "127.0.0.1", "port": 9,
            "security": "none", "username": "u", "password_file": str(tmp_path / "pw"),
            "timeout": 1}
    for extra, warned in (({"verify_dkim": False}, True), ({}, False),
                          ({"verify_dkim": False, "authserv_id": MTA}, False)):
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump({"host": {"type": "dry-run"},
                                        "filters": {"staff": ["@example.com"]},
                                        "accounts": [{**base, **extra}]}))
        _, out = run_cli("--config", str(path), "check")
        assert ("WARN  account support: staff commands and forwards can never act" in out) \
            is warned, out
