"""Is the From address of a mail proven? Computed once per mail, before the classifiers.

A From line is whatever the sender typed. What acts in a sender's name (staff commands such as
``#close#``, staff forwards that make a third party the requester, the per-sender storm cap
that silences an address) needs a sender proven by one of, in this order:

1. ``trusted``: the account only receives mail that was authenticated upstream (an internal
   relay, a submission-only mailbox): the admin vouches for every From.
2. ``Authentication-Results`` (RFC 8601) from the receiving MTA, recognised by the account's
   ``authserv_id``: ``dmarc=pass``, or ``dkim=pass`` with ``header.d`` aligned to the From
   domain (relaxed: equal, or one a subdomain of the other). Only the topmost header with
   that authserv-id counts; RFC 8601 section 5 has the MTA remove copies arriving from
   outside, so a header the sender wrote with the same id sits below the MTA's own.
   Results from any other authserv-id are the sender's word and are ignored.
3. The bridge's own DKIM check (dkimpy) of a signature whose ``d=`` is aligned the same way,
   when a DNS lookup is given (``dnsfunc``); tests inject their answers, the service uses DNS.

Pure: no I/O here unless the caller's ``dnsfunc`` does it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import authres
import dkim

from connector.mail.model import ParsedMessage

log = logging.getLogger(__name__)

#: dkimpy's DNS hook: a TXT query name (bytes, e.g. b"sel._domainkey.example.com.") -> the
#: record's text, or None/b"" when there is none.
DnsLookup = Callable[..., bytes | str | None]

#: The tag on mail whose From is a staff address that nothing proves: it stays ordinary mail
#: (no command runs, no forward changes the requester).
TAG_STAFF_UNVERIFIED = "staff_unverified"

#: At most this many DKIM signatures are checked per mail (each costs a DNS query).
MAX_DKIM_SIGNATURES = 3


class AuthMethod(StrEnum):
    TRUSTED_ACCOUNT = "trusted_account"
    DMARC = "authentication_results_dmarc"
    DKIM_RESULT = "authentication_results_dkim"
    DKIM_VERIFIED = "dkim_verified"
    NONE = "none"


@dataclass(frozen=True)
class SenderAuthentication:
    """What is proven about the From address of one mail."""

    address: str | None  # the From address, lower-cased
    authenticated: bool
    method: AuthMethod
    detail: str

    @classmethod
    def unproven(cls, address: str | None, detail: str) -> SenderAuthentication:
        return cls(address, False, AuthMethod.NONE, detail)

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "authenticated": self.authenticated,
                "method": self.method.value, "detail": self.detail}


def authenticate_sender(message: ParsedMessage, *, trusted: bool,
                        authserv_ids: Sequence[str] = (),
                        dnsfunc: DnsLookup | None = None) -> SenderAuthentication:
    """The proof for ``message``'s From, trying the methods in the module's order."""
    sender = message.from_
    address = sender.normalized if sender is not None and sender.email else None
    if address is None or "@" not in address:
        return SenderAuthentication.unproven(address, "no usable From address")
    if trusted:
        return SenderAuthentication(address, True, AuthMethod.TRUSTED_ACCOUNT,
                                    "the account is trusted: its mail was authenticated "
                                    "upstream")
    domain = address.rpartition("@")[2]
    tried: list[str] = []
    if authserv_ids:
        found = _from_results(message, domain, authserv_ids)
        if found is not None and found[0] is not None:
            method, detail = found[0], found[1]
            return SenderAuthentication(address, True, method, detail)
        tried.append(found[1] if found is not None else
                     f"no Authentication-Results from {', '.join(authserv_ids)}")
    else:
        tried.append("no authserv_id configured: Authentication-Results not trusted")
    if dnsfunc is not None:
        verified, detail = _verify_dkim(message.raw, domain, dnsfunc)
        if verified:
            return SenderAuthentication(address, True, AuthMethod.DKIM_VERIFIED, detail)
        tried.append(detail)
    else:
        tried.append("DKIM not checked by the bridge")
    return SenderAuthentication.unproven(address, "; ".join(tried))


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed DMARC-style alignment without a public-suffix list: equal, or one a subdomain
    of the other (a key under a public suffix cannot be published, so this does not widen
    what an attacker can sign)."""
    d, f = signing_domain.strip().rstrip(".").lower(), from_domain.strip().rstrip(".").lower()
    if not d or not f:
        return False
    return d == f or f.endswith("." + d) or d.endswith("." + f)


def _from_results(message: ParsedMessage, domain: str,
                  authserv_ids: Sequence[str]) -> tuple[AuthMethod | None, str] | None:
    """(method, detail) from the topmost Authentication-Results of our MTA; method None when
    it proves nothing; None when there is no such header."""
    wanted = {a.lower() for a in authserv_ids}
    for value in message.header_all("Authentication-Results"):
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except authres.AuthResError:
            continue  # unreadable: not the MTA's (it writes valid ones)
        if (header.authserv_id or "").lower() not in wanted:
            continue
        return _judge_results(header, domain)
    return None


def _judge_results(header: authres.AuthenticationResultsHeader,
                   domain: str) -> tuple[AuthMethod | None, str]:
    seen: list[str] = []
    for result in header.results:
        method, outcome = (result.method or "").lower(), (result.result or "").lower()
        props = {f"{p.type}.{p.name}".lower(): (p.value or "") for p in result.properties}
        if method == "dmarc":
            seen.append(f"dmarc={outcome}")
            policy_from = props.get("header.from", domain)
            if outcome == "pass" and policy_from.lower().rstrip(".") == domain:
                return AuthMethod.DMARC, f"{header.authserv_id}: dmarc=pass for {domain}"
        elif method == "dkim":
            d = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
            seen.append(f"dkim={outcome} d={d or '?'}")
            if outcome == "pass" and aligned(d, domain):
                return (AuthMethod.DKIM_RESULT,
                        f"{header.authserv_id}: dkim=pass d={d}, aligned with {domain}")
    shown = ", ".join(seen) or "no dkim or dmarc result"
    return None, f"{header.authserv_id}: {shown} (none passes aligned with {domain})"


def _verify_dkim(raw: bytes, domain: str, dnsfunc: DnsLookup) -> tuple[bool, str]:
    try:
        checker = dkim.DKIM(raw)
        signatures = [dkim.parse_tag_value(v) for name, v in checker.headers
                      if name.lower() == b"dkim-signature"]
    except Exception as exc:  # dkimpy raises many kinds on hostile input
        return False, f"DKIM signatures unreadable: {type(exc).__name__}"
    if not signatures:
        return False, "no DKIM signature"
    details: list[str] = []
    for index, tags in enumerate(signatures[:MAX_DKIM_SIGNATURES]):
        d = tags.get(b"d", b"").decode("ascii", "replace")
        if not aligned(d, domain):
            details.append(f"DKIM d={d} not aligned with {domain}")
            continue
        try:
            ok = checker.verify(idx=index, dnsfunc=dnsfunc)
        except Exception as exc:  # DNS failures and malformed keys: not proven
            log.debug("dkim: signature %d (d=%s) not verified: %s", index, d, exc)
            ok = False
        if ok:
            return True, f"DKIM signature d={d} verified by the bridge"
        details.append(f"DKIM signature d={d} does not verify")
    return False, "; ".join(details)
