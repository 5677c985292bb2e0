"""PEC provider presets: mailbox and submission servers, and the limits that matter.

Sources are in ../shared/notes/pec-format.md section 9. Hosts marked unverified there are
kept, since a preset only fills defaults: every value stays overridable in the account.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PecProvider:
    key: str
    name: str
    imap_host: str
    imap_port: int = 993
    smtp_host: str = ""
    smtp_port: int = 465
    sender_domain: str = ""  # posta-certificata@<domain> signs this provider's envelopes
    rate_limit_per_minute: int | None = None
    notes: str = ""


PROVIDERS: dict[str, PecProvider] = {p.key: p for p in (
    PecProvider("aruba", "Aruba PEC", "imaps.pec.aruba.it", 993, "smtps.pec.aruba.it", 465,
                "pec.aruba.it",
                notes="with two-step verification on, log in with an app password "
                      "('password per programmi di posta'), which expires after 4 months"),
    PecProvider("legalmail", "Legalmail / InfoCert", "mbox.cert.legalmail.it", 993,
                "sendm.cert.legalmail.it", 465, "legalmail.it", rate_limit_per_minute=6,
                notes="the login is the InfoCert USERID, not the e-mail address; sending is "
                      "limited to 6 messages a minute"),
    # The Zendesk PEC connector's own setup guide names mail.postecert.it for both.
    PecProvider("poste", "Poste Italiane (Postecert)", "mail.postecert.it", 993,
                "mail.postecert.it", 465, "postecert.it"),
    PecProvider("namirial", "Namirial", "imaps.sicurezzapostale.it", 993,
                "smtps.sicurezzapostale.it", 465, "sicurezzapostale.it"),
    PecProvider("register", "Register.it", "imaps.pec.register.it", 993,
                "smtps.pec.register.it", 465, "pec.register.it",
                notes="the IMAP host is not confirmed; check it at onboarding"),
)}
PROVIDERS["infocert"] = PROVIDERS["legalmail"]


def provider(key: str) -> PecProvider | None:
    return PROVIDERS.get(key.strip().lower())


def auth_failure_hint(key: str | None) -> str:
    """What to tell an admin whose PEC login was refused."""
    hint = ("PEC providers often require an app password when two-step verification is on; "
            "the normal web password is then refused")
    found = provider(key) if key else None
    if found is not None and found.notes:
        hint += f" ({found.name}: {found.notes})"
    return hint
