"""Mailbox presets for the big hosted providers (``provider: microsoft365`` or ``gmail`` on an
account): servers, ports and which OAuth2 issuer signs their tokens. PEC presets are in
``connector.pec.providers``; both fill defaults only, every value stays overridable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MailProvider:
    key: str
    name: str
    oauth2_provider: str  # microsoft | google
    imap_host: str
    pop3_host: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    imap_port: int = 993
    pop3_port: int = 995
    graph_host: str = ""


MAIL_PROVIDERS: dict[str, MailProvider] = {p.key: p for p in (
    # Microsoft: "Authenticate an IMAP, POP or SMTP connection using OAuth" (Exchange Online).
    MailProvider("microsoft365", "Microsoft 365", "microsoft", "outlook.office365.com",
                 "outlook.office365.com", "smtp.office365.com", 587, "starttls",
                 graph_host="graph.microsoft.com"),
    # Google: "IMAP, POP, and SMTP" (Gmail developer guide).
    MailProvider("gmail", "Google Workspace (Gmail)", "google", "imap.gmail.com",
                 "pop.gmail.com", "smtp.gmail.com", 465, "tls"),
)}


def mail_provider(key: str | None) -> MailProvider | None:
    return MAIL_PROVIDERS.get(key.strip().lower()) if key else None
