"""Outbound configuration: the ``outbound:`` section of an account and the top-level ``service:``.

::

    service:
      public_url: https://bridge.example.it      # what Zendesk calls (behind your proxy)
      host: 127.0.0.1                             # where the WSGI server listens
      port: 8025
      signing_secret: ${PMB_WEBHOOK_SECRET}       # or signing_secret_file: PATH
      max_body_bytes: 256KB
      sweep_interval: 5                           # minutes
      parse_workers: auto                         # processes parsing mail ahead (0: none)

    accounts:
      - name: pec-main
        ...
        outbound:
          enabled: true
          provider: aruba                         # preset for smtp host/port/limits
          from_address: assistenza@pec.example.it
          display_name: ACME Assistenza
          smtp: {username: ..., password: ${PEC_PASSWORD}}   # default: the account's login
          subject_template: "{{ticket.title}} [#{{ticket.id}}]"
          message_template: "{{ticket.latest_comment_html}}"
          include_attachments: true

Secrets follow the rule of the rest of the file (``${ENV}`` or ``*_file``), through
``connector.config_reader``, so errors carry the same key paths. ``connector.config`` validates
these sections with the rest of the file; this module does not import it (only for types).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from connector.auth.presets import mail_provider
from connector.config_reader import Problems, Reader, otobo_ticket_pattern
from connector.errors import ConfigError
from connector.mail.addresses import is_valid_address
from connector.outbound.templates import KNOWN_PLACEHOLDERS, has_line_break, unknown_placeholders
from connector.pec.providers import PROVIDERS as PEC_PROVIDERS
from connector.pec.providers import PecProvider
from connector.pec.providers import provider as pec_provider
from connector.tls import is_loopback

if TYPE_CHECKING:
    from connector.auth.settings import OAuth2Settings
    from connector.config import AccountConfig

SMTP_SECURITIES = ("tls", "starttls")
TRANSPORTS = ("smtp", "graph")
REPLY_COMMENTS = ("public", "any")
RECEIPT_TYPES = ("completa", "breve", "sintetica")
DEFAULT_SUBJECT_TEMPLATE = "{{ticket.title}} [#{{ticket.id}}]"
DEFAULT_MESSAGE_TEMPLATE = "{{ticket.latest_comment_html}}"
#: RFC 6109 and the PEC rules oblige every provider to accept 30 MB (size x recipients).
DEFAULT_MAX_MESSAGE_BYTES = 30 * 1024 * 1024
#: Aruba refuses these even inside archives, after accepting the submission; refusing them
#: before sending gives the agent a clear error instead of a non-accettazione later.
DEFAULT_BLOCKED_EXTENSIONS = (
    "ade", "adp", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "ins", "isp", "jar", "js",
    "jse", "lib", "lnk", "mde", "msc", "msi", "msp", "mst", "pif", "ps1", "scr", "sct", "shb",
    "sys", "vb", "vbe", "vbs", "vxd", "wsc", "wsf", "wsh",
)
T = TypeVar("T")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_.:/-]{0,79}$")


#: PEC provider presets, defined once in connector.pec.providers (submission over implicit
#: TLS on every one of them).
PROVIDERS: Mapping[str, PecProvider] = PEC_PROVIDERS


def account_slug(name: str) -> str:
    """The account's name as it appears in tags: lower case, only ``[a-z0-9_]``."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # tls (implicit, 465) | starttls (587)
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    insecure_tls_i_understand: bool = False  # verify_tls false for a non-loopback host
    timeout: float = 60.0
    oauth2: OAuth2Settings | None = None  # the account's: AUTH XOAUTH2 instead of a password


def account_uses_oauth2(account: Mapping[str, Any]) -> bool:
    """Whether a raw account mapping logs in with OAuth2 (said, or implied by its preset)."""
    if account.get("auth") is not None:
        return account.get("auth") == "oauth2"
    return mail_provider(str(account.get("provider") or "")) is not None or \
        account.get("protocol") == "graph"


@dataclass(frozen=True)
class OutboundSettings:
    """How one account sends PEC replies."""

    account: str
    enabled: bool
    smtp: SmtpSettings
    from_address: str
    display_name: str = ""
    subject_template: str = DEFAULT_SUBJECT_TEMPLATE
    message_template: str = DEFAULT_MESSAGE_TEMPLATE
    include_attachments: bool = True
    rate_limit_per_minute: int | None = None
    max_attempts: int = 5
    retry_backoff: float = 60.0  # seconds before the first retry; doubles, capped at an hour
    reply_tag: str = ""
    provider: str | None = None
    reply_comment: str = "public"  # which comment is sent: the latest public one, or any
    recipient_field_id: int | None = None  # ticket field naming another recipient
    receipt_type: str | None = None  # X-TipoRicevuta: completa | breve | sintetica
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    blocked_extensions: tuple[str, ...] = DEFAULT_BLOCKED_EXTENSIONS
    ticket_pattern: str = r"\[#(\d+)\]"  # the account's subject_ticket_pattern
    transport: str = "smtp"  # smtp | graph (Microsoft Graph sendMail, with the account's token)
    ticket_hook: str = "#"  # what a sent subject puts before the id: [#12], [Ticket#2026...]
    # Every public reply an agent writes on a PEC ticket of this account goes out by PEC (the
    # channel app's behaviour); off: only the macro sends.
    public_reply: bool = True

    @property
    def slug(self) -> str:
        return account_slug(self.account)

    @property
    def pending_tag(self) -> str:
        """Set by the trigger while the bridge works on the request; the sweep looks for it."""
        return f"{self.reply_tag}_pending"

    @classmethod
    def from_mapping(cls, data: Any, *, path: str, key: str, base_dir: Path,
                     account: Mapping[str, Any] | None = None,
                     secrets: bool = True, ticket_hook: str = "#") -> OutboundSettings:
        """Validate one ``outbound:`` mapping. ``account`` is the raw account mapping around it
        (name, login and subject pattern are defaults from there)."""
        r = Reader(data if data is not None else {}, path, key, base_dir, secrets=secrets)
        account = account or {}
        name = str(account.get("name") or "")
        enabled = r.get("enabled", bool, True)
        # The account's own `provider:` preset applies unless outbound names another.
        provider = r.choice("provider", tuple(PROVIDERS)) or account.get("provider")
        preset = pec_provider(str(provider)) if provider else None
        transport = r.choice("transport", TRANSPORTS,
                             "graph" if account.get("protocol") == "graph" else "smtp")
        if transport == "graph" and not account_uses_oauth2(account):
            raise r.error("transport", "graph sends with the account's OAuth2 token: the "
                          "account needs auth: oauth2 (provider microsoft)")
        smtp = _smtp(r.child("smtp"), preset, account, path, key, base_dir,
                     required=enabled and transport == "smtp")
        default_from = account.get("username")
        from_address = r.get("from_address", str, default_from,
                             required=enabled and not default_from)
        from_address = (from_address or "").strip()
        if enabled and (not is_valid_address(from_address) or not from_address.isascii()):
            raise r.error("from_address", f"must be the PEC mailbox address, got {from_address!r}")
        display_name = r.get("display_name", str, "")
        if has_line_break(display_name):
            raise r.error("display_name", "must be one line")
        subject = _template(r, "subject_template", DEFAULT_SUBJECT_TEMPLATE)
        if has_line_break(subject):
            raise r.error("subject_template", "must be one line")
        rate = r.get("rate_limit_per_minute", int,
                      preset.rate_limit_per_minute if preset else None)
        if rate is not None and rate <= 0:
            raise r.error("rate_limit_per_minute", f"must be greater than 0, got {rate}")
        reply_tag = r.get("reply_tag", str, f"pec_connector_reply_{account_slug(name)}")
        if not _TAG.match(reply_tag):
            raise r.error("reply_tag", "must be a Zendesk tag: lower-case letters, digits and "
                          f"_ . : / -, no spaces; got {reply_tag!r}")
        extensions = tuple(e.lower().lstrip(".") for e in r.str_list("blocked_extensions")) \
            if r.has("blocked_extensions") else DEFAULT_BLOCKED_EXTENSIONS
        settings = cls(
            account=name,
            enabled=enabled,
            smtp=smtp,
            from_address=from_address,
            display_name=display_name,
            subject_template=subject,
            message_template=_template(r, "message_template", DEFAULT_MESSAGE_TEMPLATE),
            include_attachments=r.get("include_attachments", bool, True),
            rate_limit_per_minute=rate,
            max_attempts=r.positive("max_attempts", int, 5),
            retry_backoff=r.positive("retry_backoff", float, 60.0),
            reply_tag=reply_tag,
            provider=provider,
            reply_comment=r.choice("reply_comment", REPLY_COMMENTS, "public"),
            recipient_field_id=r.get("recipient_field_id", int),
            receipt_type=r.choice("receipt_type", RECEIPT_TYPES),
            max_message_bytes=r.size("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
            blocked_extensions=extensions,
            ticket_pattern=str(account.get("subject_ticket_pattern")
                               or (r"\[#(\d+)\]" if ticket_hook == "#"
                                   else otobo_ticket_pattern(ticket_hook))),
            ticket_hook=ticket_hook,
            transport=transport,
            public_reply=r.get("public_reply", bool, True),
        )
        r.finish()
        return settings


def _template(r: Reader, name: str, default: str) -> str:
    value = r.get(name, str, default)
    unknown = unknown_placeholders(value)
    if unknown:
        raise r.error(name, f"unknown placeholder {{{{{unknown[0]}}}}}; the bridge fills "
                      f"{', '.join('{{' + p + '}}' for p in KNOWN_PLACEHOLDERS)}")
    return value


def _smtp(r: Reader, preset: PecProvider | None, account: Mapping[str, Any], path: str,
          key: str, base_dir: Path, *, required: bool) -> SmtpSettings:
    default_host = preset.smtp_host if preset else None
    mail_preset = mail_provider(str(account.get("provider") or ""))
    default_security = "tls"
    if mail_preset is not None:
        default_host, default_security = mail_preset.smtp_host, mail_preset.smtp_security
    host = r.get("host", str, default_host, required=required and default_host is None)
    security = r.choice("security", SMTP_SECURITIES, default_security)
    port = r.get("port", int, preset.smtp_port if preset and security == "tls"
                 else mail_preset.smtp_port if mail_preset and security == default_security
                 else (465 if security == "tls" else 587))
    if not 0 < port < 65536:
        raise r.error("port", f"must be a TCP port, got {port}")
    default_user = account.get("username")
    username = r.get("username", str, default_user, required=required and not default_user)
    if r.has("password") or r.has("password_file"):
        password = r.secret("password", required=required)
    elif account_uses_oauth2(account):
        password = ""  # load_outbound hands the account's OAuth2 settings to the sender
    else:
        # The PEC mailbox logs in to IMAP and SMTP with the same credentials.
        outer = Reader(account, path, key.rsplit(".", 1)[0], base_dir, secrets=r.secrets,
                       missing_secrets=r.missing_secrets)
        password = outer.secret("password", required=False)
        if required and not (password or outer.has("password") or outer.has("password_file")):
            raise r.error("password", "is required (as password: ${ENV_NAME} or "
                          "password_file: PATH), or set on the account")
    verify_tls, insecure_tls = r.verify_tls(host or "")
    settings = SmtpSettings(
        host=host or "",
        port=port,
        security=security,
        username=username or "",
        password=password,
        ca_file=str(r.path_value("ca_file")) if r.has("ca_file") else None,
        verify_tls=verify_tls,
        insecure_tls_i_understand=insecure_tls,
        timeout=r.positive("timeout", float, 60.0),
    )
    r.finish()
    return settings


@dataclass(frozen=True)
class ServiceSettings:
    """The ``service:`` section: the WSGI server (/metrics, /healthz and the webhook endpoint
    Zendesk calls), the outbound sweep, and how `run` uses the machine's cores."""

    public_url: str  # "" when no account sends (required then: checked by outbound_from_raw)
    signing_secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8025
    max_body_bytes: int = 256 * 1024
    sweep_interval: float = 5.0  # minutes
    timestamp_tolerance: float = 300.0  # seconds
    threads: int = 4
    suppress_tag: str = "pec_connector"
    category_name: str = "PEC Connector"
    # None: "auto", the cores less one (at most 4; none on one core). Measured on 2 cores
    # (bench/RESULTS.md) one worker is worth about 8 % end to end when the machine is quiet
    # and nothing when other processes want the second core; 0 turns it off.
    parse_workers: int | None = None

    def endpoint(self, account: str) -> str:
        """The URL Zendesk posts to for ``account``."""
        return f"{self.public_url}/hooks/zendesk/{account}"

    @classmethod
    def from_mapping(cls, data: Any, *, path: str, key: str, base_dir: Path,
                     secrets: bool = True) -> ServiceSettings:
        r = Reader(data if data is not None else {}, path, key, base_dir, secrets=secrets)
        # Needed only when an account sends (checked by outbound_from_raw): a service section
        # for /metrics and /healthz alone has no webhook for Zendesk to call.
        public_url = r.get("public_url", str, "").rstrip("/")
        parts = urlsplit(public_url)
        if public_url and (parts.scheme not in ("http", "https") or not parts.hostname
                           or parts.query):
            raise r.error("public_url", "must be the bridge's public base URL such as "
                          f"https://bridge.example.it, got {public_url!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise r.error("public_url", "must use https:// (Zendesk sends ticket data there)")
        parse_workers = r.get("parse_workers", (int, str), "auto")
        if parse_workers == "auto":
            parse_workers = None
        elif isinstance(parse_workers, str) or not 0 <= parse_workers <= 64:
            raise r.error("parse_workers", "must be auto, or 0 (parse in the main thread) to "
                          f"64, got {parse_workers!r}")
        port = r.get("port", int, 8025)
        if not 0 <= port < 65536:
            raise r.error("port", f"must be a TCP port, got {port}")
        suppress_tag = r.get("suppress_tag", str, "pec_connector")
        if not _TAG.match(suppress_tag):
            raise r.error("suppress_tag", f"must be a Zendesk tag, got {suppress_tag!r}")
        settings = cls(
            public_url=public_url,
            # Needed only when an account sends (checked by outbound_from_raw): a service
            # section for /metrics and /healthz alone has no webhook to sign.
            signing_secret=r.secret("signing_secret", required=False),
            host=r.get("host", str, "127.0.0.1"),
            port=port,
            max_body_bytes=r.size("max_body_bytes", 256 * 1024),
            sweep_interval=r.positive("sweep_interval", float, 5.0),
            timestamp_tolerance=r.positive("timestamp_tolerance", float, 300.0),
            threads=r.positive("threads", int, 4),
            suppress_tag=suppress_tag,
            category_name=r.get("category_name", str, "PEC Connector"),
            parse_workers=parse_workers,
        )
        if settings.signing_secret and len(settings.signing_secret) < 16:
            raise r.error("signing_secret", "is too short: use at least 16 random characters")
        r.finish()
        return settings


@dataclass(frozen=True)
class OutboundConfig:
    """Every account's outbound settings, and the service section when there is one."""

    accounts: tuple[OutboundSettings, ...] = ()
    service: ServiceSettings | None = None

    @property
    def enabled_accounts(self) -> tuple[OutboundSettings, ...]:
        return tuple(a for a in self.accounts if a.enabled)

    @property
    def enabled(self) -> bool:
        return bool(self.enabled_accounts) and self.service is not None

    def account(self, name: str) -> OutboundSettings | None:
        return next((a for a in self.accounts if a.account == name), None)


def outbound_from_raw(data: Mapping[str, Any], where: str, base_dir: Path, *,
                      secrets: bool = True, problems: Problems | None = None) -> OutboundConfig:
    """Validate the outbound parts of a whole raw config mapping (``secrets=False``: see
    ``connector.config.load_config``). With ``problems``, each section's problem is noted
    there and the other sections are still read."""

    def note(error: ConfigError) -> None:
        if problems is None:
            raise error
        problems.add(error)

    def section(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except ConfigError as exc:
            note(exc)
            return None

    accounts: list[OutboundSettings] = []
    seen_tags: set[str] = set()
    raw_accounts = data.get("accounts") or []
    # OTOBO/Znuny number their tickets under a hook: subjects carry [Ticket#2026...].
    host = data.get("host") if isinstance(data.get("host"), Mapping) else {}
    otobo = host.get("otobo") if isinstance(host.get("otobo"), Mapping) else None
    hook = str((otobo or {}).get("ticket_hook") or "Ticket#") if otobo is not None else "#"
    for i, raw in enumerate(raw_accounts if isinstance(raw_accounts, list) else []):
        if not isinstance(raw, Mapping) or raw.get("outbound") is None:
            continue
        if raw.get("enabled") is False:
            continue
        settings = section(lambda i=i, raw=raw: OutboundSettings.from_mapping(
            raw["outbound"], path=where, key=f"accounts[{i}].outbound", base_dir=base_dir,
            account=raw, secrets=secrets, ticket_hook=hook))
        if settings is None:
            continue
        if settings.reply_tag in seen_tags:
            note(ConfigError(f"reply_tag {settings.reply_tag!r} is used by two accounts",
                             path=where, key=f"accounts[{i}].outbound.reply_tag"))
        seen_tags.add(settings.reply_tag)
        accounts.append(settings)
    sending = any(a.enabled for a in accounts)
    service = None
    if data.get("service") is not None:
        service = section(lambda: ServiceSettings.from_mapping(
            data["service"], path=where, key="service", base_dir=base_dir, secrets=secrets))
    elif sending:
        note(ConfigError("is required when an account has outbound enabled (public_url and "
                         "signing_secret for the Zendesk webhook)", path=where, key="service"))
    if service is not None and not service.public_url and sending:
        note(ConfigError("is required when an account has outbound enabled (the bridge's "
                         "public base URL, which Zendesk's webhook calls)",
                         path=where, key="service.public_url"))
    if service is not None and not service.signing_secret and secrets and sending:
        note(ConfigError("is required when an account has outbound enabled (as "
                         "signing_secret: ${ENV_NAME} or signing_secret_file: PATH)",
                         path=where, key="service.signing_secret"))
    return OutboundConfig(accounts=tuple(accounts), service=service)


def validate_outbound(data: Mapping[str, Any], where: str, base_dir: Path, *,
                      secrets: bool = True, problems: Problems | None = None) -> None:
    """A ``connector.config`` section validator: every outbound and service problem of the
    file, noted in ``problems`` (raised at once without)."""
    outbound_from_raw(data, where, base_dir, secrets=secrets, problems=problems)


def graph_endpoint(account: AccountConfig) -> SmtpSettings:
    """Where a ``transport: graph`` account sends: its own Graph host when it reads through
    Graph, else graph.microsoft.com; a token for Graph (not for Exchange's IMAP/SMTP)."""
    from dataclasses import replace

    from connector.auth.settings import default_scopes

    assert account.oauth2 is not None
    oauth2 = account.oauth2
    if account.protocol != "graph":
        oauth2 = replace(oauth2, scopes=default_scopes(oauth2.provider, oauth2.flow, "graph"))
    if account.protocol == "graph":
        host, port, security = account.host, account.port, account.security
    else:
        host, port, security = "graph.microsoft.com", 443, "tls"
    return SmtpSettings(host=host, port=port, security=security, username=account.username,
                        password="", ca_file=account.ca_file, verify_tls=account.verify_tls,
                        timeout=account.timeout, oauth2=oauth2)


class LoadedConfig(Protocol):
    """What load_outbound reads of ``connector.config.Config`` (named structurally: the
    config module imports this one, not the other way round)."""

    @property
    def path(self) -> Path: ...

    @property
    def raw(self) -> Mapping[str, Any]: ...

    @property
    def accounts(self) -> tuple[AccountConfig, ...]: ...


def load_outbound(config: LoadedConfig) -> OutboundConfig:
    """The outbound configuration of a loaded ``Config`` (read from ``config.raw``); accounts
    logging in with OAuth2 send with the same token source unless their smtp section has a
    password of its own."""
    from dataclasses import replace

    loaded = outbound_from_raw(config.raw, str(config.path), config.path.resolve().parent)
    accounts = []
    for settings in loaded.accounts:
        account = next((a for a in config.accounts if a.name == settings.account), None)
        if account is not None and settings.transport == "graph" and account.oauth2:
            settings = replace(settings, smtp=graph_endpoint(account))
        elif account is not None and account.oauth2 is not None and not settings.smtp.password:
            settings = replace(settings, smtp=replace(settings.smtp, oauth2=account.oauth2))
        accounts.append(settings)
    return replace(loaded, accounts=tuple(accounts))
