"""Configuration: one YAML file, validated whole before any mailbox is touched.

Every error names the file, the key path (``accounts[0].password``) and what is wrong. Secrets
are never taken literally from the file: ``password: ${ENV_NAME}`` or ``password_file: PATH``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from connector.config_reader import Problems, Reader, otobo_ticket_pattern
from connector.errors import ConfigError
from connector.fetch.pacing import KNOWN_SERVERS, ServerLimits
from connector.filters.settings import FilterSettings
from connector.hosts.ratelimit import Rate
from connector.mail.mimetree import ParseLimits
from connector.outbound.settings import validate_outbound
from connector.pec.providers import PROVIDERS, provider
from connector.pec.trust import TrustStore, TrustStoreError, load_trust_store, shipped_trust_store
from connector.tls import is_loopback

if TYPE_CHECKING:
    from connector.auth.settings import OAuth2Settings

#: What other modules read under the old private names (connector.auth.settings).
_Reader = Reader
_is_loopback = is_loopback
__all__ = ["otobo_ticket_pattern"]

_ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("new", "open", "pending", "hold", "solved")
TICKET_TYPES = ("problem", "incident", "question", "task")
PROTOCOLS = ("imap", "pop3", "graph")
AUTH_METHODS = ("password", "oauth2")
#: PEC facts a ticket can carry in custom fields (`pec_custom_fields` on an account).
PEC_FACTS = ("identificativo", "msgid", "certified_at", "signature")
#: When a PEC envelope's facts also go in an internal note (`pec_facts_note` on an account).
PEC_FACTS_NOTES = ("auto", "always", "never")
SECURITIES = ("tls", "starttls", "none")


def account_tag(name: str) -> str:
    """The tag every ticket opened from account ``name`` carries (``pmb_<name>``)."""
    return "pmb_" + re.sub(r"[^a-z0-9_]", "_", name.lower())


@dataclass(frozen=True)
class TicketDefaults:
    """Fields every new ticket of an account gets unless a filter says otherwise. The keys are
    Zendesk's (``group_id``, ``brand_id``, ``brands``, ``custom_fields`` by id, its priority and
    status words); ``controls`` says them in the control vocabulary the rest of the bridge
    speaks, and the host's vocabulary (connector.hosts) takes them from there."""

    group_id: int | None = None
    priority: str | None = None
    status: str | None = None
    ticket_type: str | None = None
    tags: tuple[str, ...] = ()
    custom_fields: tuple[tuple[int, Any], ...] = ()
    brand_id: int | None = None
    # The address a mail reached -> the brand its ticket belongs to (lower-case addresses).
    brands: Mapping[str, int] = field(default_factory=dict)

    def controls(self, recipient: str | None) -> tuple[tuple[str, object], ...]:
        """These defaults as X-OTOBO-* controls for a mail that reached ``recipient``: a
        numeric queue is a group id, the brand is the recipient's (``brands``) else
        ``brand_id``; custom field values keep their YAML type."""
        brand = self.brands.get(recipient or "", self.brand_id)
        out: list[tuple[str, object]] = [
            (name, str(value)) for name, value in (
                ("X-OTOBO-Queue", self.group_id), ("X-OTOBO-Priority", self.priority),
                ("X-OTOBO-State", self.status), ("X-OTOBO-Type", self.ticket_type),
                ("X-OTOBO-Brand", brand)) if value is not None]
        out += [(f"X-OTOBO-DynamicField-{fid}", value) for fid, value in self.custom_fields]
        return tuple(out)


@dataclass(frozen=True)
class FollowUpPolicy:
    """What a reply does to its ticket (OTOBO's "on reply change state/priority")."""

    status: str | None = "open"
    priority: str | None = None
    reopen_closed: bool = True  # a reply to a closed ticket opens a follow-up ticket
    # Quoted history and signatures cut from follow-up comments, the whole original kept:
    # collapse (a folded section below the reply; no extra upload) | attach (the .eml beside
    # the comment) | keep (no trimming).
    quoted_text: str = "collapse"

    def controls(self) -> tuple[tuple[str, object], ...]:
        """This policy as ``X-OTOBO-FollowUp-*`` controls (the defaults a filter overrides)."""
        return tuple((name, value) for name, value in (
            ("X-OTOBO-FollowUp-State", self.status),
            ("X-OTOBO-FollowUp-Priority", self.priority)) if value)


@dataclass(frozen=True)
class HistoryPolicy:
    """How old mail is imported (``import --history``, ``initial_sync: import_existing``):
    ``status`` every imported ticket gets (None: as decided, e.g. ``closed`` for finished
    mail); ``archive``: tickets imported as closed go straight to the helpdesk's archive."""

    status: str | None = None
    archive: bool = False


@dataclass(frozen=True)
class AccountConfig:
    name: str
    protocol: str
    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    auth: str = "password"  # password | oauth2
    oauth2: OAuth2Settings | None = None
    ca_file: str | None = None
    verify_tls: bool = True
    insecure_tls_i_understand: bool = False  # verify_tls false for a non-loopback host
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    error_folder: str = "Error"
    held_folder: str = "Held"  # mail over the per-sender cap waits here for `held release`
    ignored_folder: str = "Processed"  # where deliberately ignored mail goes
    delete_after_processing: bool = False
    poll_interval: float = 5.0  # minutes
    initial_sync: str = "all"  # all | skip_existing | import_existing
    max_size: int = 32 * 1024 * 1024
    batch_size: int = 200
    timeout: float = 60.0
    new_ticket: TicketDefaults = TicketDefaults()
    follow_up: FollowUpPolicy = FollowUpPolicy()
    history: HistoryPolicy = HistoryPolicy()
    allow_unknown_senders: bool = True
    # The requester of mail with no usable address in From, Sender, Reply-To or Return-Path
    # (the original From is shown in the ticket), or "ignore" to ignore such mail visibly.
    unknown_sender: str = "unknown-sender@example.invalid"
    weak_signals: str = "tag"  # tag | ignore: what a weak auto-reply/list/bounce sign does
    email_ccs: bool = True
    attach_original_eml: bool = False
    allow_remote_content: bool = False  # let HTML load remote images in agents' browsers
    archive_dir: Path | None = None
    own_addresses: tuple[str, ...] = ()
    subject_ticket_pattern: str = r"\[#(\d+)\]"
    trusted: bool = False
    enabled: bool = True
    idle: bool = True  # IMAP IDLE push when the server offers it; polling otherwise
    auto_disable: bool = True  # disable the account after max_failures connection failures
    max_failures: int = 10
    tcp_keepalive_seconds: float = 60.0  # TCP keepalive after this much silence; 0: off
    idle_renew_seconds: float = 290.0  # IMAP IDLE renewed this often (NAT timeouts: 5 min+)
    pec: bool = False  # a certified-mail (PEC) mailbox: envelopes unwrapped, receipts matched
    provider: str | None = None  # PEC (connector.pec.providers) or mail preset (auth.presets)
    pec_unmatched_receipts: str = "new_ticket"  # new_ticket | catch_all | ignore
    pec_catch_all_ticket: str | None = None  # a ticket id, as the host names it
    # PEC facts -> Zendesk custom field ids: identificativo, msgid, certified_at, signature
    # PEC fact -> Zendesk custom field id, or OTOBO/Znuny dynamic field name.
    pec_custom_fields: Mapping[str, int | str] = field(default_factory=dict)
    # The internal note with a PEC envelope's facts: auto (left out when a certified new
    # ticket carries every fact in pec_custom_fields), always, never (warnings still noted).
    pec_facts_note: str = "auto"
    # The anchors a PEC signer must chain to (top-level pec.trust_anchors), the same for all.
    pec_trust: TrustStore = field(default_factory=shipped_trust_store, repr=False,
                                  compare=False)
    # authserv-ids of the receiving MTA whose Authentication-Results headers are believed
    # (RFC 8601: any other instance's results may be forged by the sender).
    authserv_ids: tuple[str, ...] = ()
    verify_dkim: bool = True  # the bridge checks staff senders' DKIM signatures itself (DNS)

    @property
    def tag(self) -> str:
        """The tag every ticket from this account carries."""
        return account_tag(self.name)


@dataclass(frozen=True)
class OtoboHostConfig:
    """``host.otobo``: the agent and the names the shipped web service and fields use."""

    user: str
    password: str = field(default="", repr=False)
    queue: str = "Raw"
    state: str = "new"
    priority: str = "3 normal"
    ticket_type: str | None = None
    message_id_field: str = "PMBMessageID"
    article_key_field: str = "PMBArticleKey"
    tags_field: str | None = None
    receipt_state_field: str | None = None
    max_length: int = 100_000_000
    ticket_hook: str = "Ticket#"
    states: Mapping[str, str] = field(default_factory=dict)
    priorities: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostConfig:
    type: str  # zendesk | otobo | dry-run
    url: str = ""
    auth_type: str = ""  # oauth | api_token
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    scope: str = "read write"
    email: str = ""
    api_token: str = field(default="", repr=False)
    timeout: float = 30.0
    max_attempts: int = 5
    verify_tls: bool = True
    insecure_tls_i_understand: bool = False  # verify_tls false for a non-loopback host
    ca_file: str | None = None
    max_uploads_per_mail: int = 20  # attachments uploaded one by one; the rest in one archive
    max_ccs_per_mail: int = 20  # Cc addresses made the ticket's CCs; the rest listed
    groups: Mapping[str, int] = field(default_factory=dict)  # X-OTOBO-Queue name -> group id
    custom_fields: Mapping[str, int] = field(default_factory=dict)  # DynamicField name -> id
    # The plan's request budget and the ticket-update budget (None: follow the host's headers).
    rate_limit: Rate | None = None
    ticket_update_rate_limit: Rate | None = None
    # Mails of one account at the helpdesk at once (never two of one conversation).
    max_in_flight: int = 8
    otobo: OtoboHostConfig | None = None  # type otobo (and a dry-run reading from OTOBO)



@dataclass(frozen=True)
class StoreConfig:
    path: Path  # the SQLite ledger (type: sqlite)
    state_dir: Path | None = None  # OAuth2 refresh tokens (mode 0600); default: path's folder
    log_retention_days: float = 30.0  # communication log entries older than this are purged
    # Finished mails older than this keep only what later mails need (see apply_retention).
    retention_days: float = 30.0
    type: str = "sqlite"  # or "postgresql" (connector/store/postgres.py)
    # PostgreSQL's libpq connection string or URI: a secret (it may hold the password), never
    # shown (repr=False keeps it out of any log of the config).
    dsn: str = field(default="", repr=False)
    pool_size: int = 10  # PostgreSQL connections per store (the queue has its own few)

    @property
    def shared(self) -> bool:
        """True for an engine several bridge instances can use at once (PostgreSQL)."""
        return self.type == "postgresql"


@dataclass(frozen=True)
class LeasesConfig:
    """The ``leases:`` section: several ``run`` instances sharing one ledger
    (connector.service.leases). ``ttl``: seconds an instance keeps an account after its last
    renewal, so the bound on a takeover after it died; renewed every ``ttl / 4``.
    ``local_liveness``: a holder on this machine whose process is gone is taken over at once
    instead of after ``ttl``."""

    ttl: float = 20.0
    local_liveness: bool = True


@dataclass(frozen=True)
class ConnectionsConfig:
    """The ``connections:`` section: login pacing per mail server (connector.fetch.pacing).
    ``servers`` maps ``host`` or ``host:port`` to limits that replace the defaults there."""

    default: ServerLimits = ServerLimits()
    servers: Mapping[str, ServerLimits] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path
    accounts: tuple[AccountConfig, ...]
    host: HostConfig
    store: StoreConfig
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    connections: ConnectionsConfig = ConnectionsConfig()
    limits: ParseLimits = ParseLimits()  # the parser's bounds per mail (``limits:``)
    pec_trust: TrustStore = field(default_factory=shipped_trust_store, repr=False)
    leases: LeasesConfig = LeasesConfig()
    #: Secrets left unresolved by ``load_config(..., secrets=False)``: "key.path: why".
    missing_secrets: tuple[str, ...] = ()

    def account(self, name: str) -> AccountConfig:
        for acc in self.accounts:
            if acc.name == name:
                return acc
        raise ConfigError(f"no account named {name!r}", path=str(self.path), key="accounts")


def _ticket_defaults(r: Reader) -> TicketDefaults:
    custom = r.get("custom_fields", dict, {})
    fields: list[tuple[int, Any]] = []
    for k, v in custom.items():
        try:
            fields.append((int(k), v))
        except (TypeError, ValueError):
            r.report(ConfigError("custom field keys must be numeric field ids", path=r.path,
                                 key=f"{r.sub('custom_fields')}.{k}"))
    defaults = TicketDefaults(
        group_id=r.get("group_id", int),
        priority=r.choice("priority", PRIORITIES),
        status=r.choice("status", STATUSES),
        ticket_type=r.choice("type", TICKET_TYPES),
        tags=r.str_list("tags"),
        custom_fields=tuple(fields),
        brand_id=r.get("brand_id", int),
        brands={address.lower(): brand for address, brand in r.int_map("brands").items()},
    )
    r.finish()
    return defaults


QUOTED_TEXT = ("attach", "collapse", "keep")


def _history(r: Reader) -> HistoryPolicy:
    policy = HistoryPolicy(status=r.choice("status", (*STATUSES, "closed")),
                           archive=r.get("archive", bool, False))
    if policy.archive and policy.status != "closed":
        raise r.error("archive", "only tickets imported as closed can go to the archive: "
                      "set status: closed")
    r.finish()
    return policy


def _follow_up(r: Reader) -> FollowUpPolicy:
    # An explicit `status: null` means "leave the ticket's status alone".
    r.used.add("status")
    status = None if "status" in r.data and r.data["status"] is None else \
        r.choice("status", STATUSES, "open")
    policy = FollowUpPolicy(
        status=status,
        priority=r.choice("priority", PRIORITIES),
        reopen_closed=r.get("reopen_closed", bool, True),
        quoted_text=r.choice("quoted_text", QUOTED_TEXT, "collapse"),
    )
    r.finish()
    return policy


_DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                  ("pop3", "tls"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110,
                  ("graph", "tls"): 443, ("graph", "starttls"): 443, ("graph", "none"): 80}

#: Keys other stages validate themselves (filters, PEC, outbound) and keys to come.
_ACCOUNT_EXTENSION_KEYS: tuple[str, ...] = ("filters", "outbound", "oauth2")


def _pec_trust(r: Reader) -> TrustStore:
    """The top-level ``pec:`` section: ``trust_anchors`` (PEM files or folders) added to the
    shipped AgID PEC CAs, or replacing them with ``shipped_trust_anchors: false``."""
    anchors = r.str_list("trust_anchors")
    include_shipped = r.get("shipped_trust_anchors", bool, True)
    r.finish()
    if not anchors and include_shipped:
        return shipped_trust_store()
    paths = []
    for i, item in enumerate(anchors):
        path = Path(os.path.expanduser(item))
        path = path if path.is_absolute() else r.base_dir / path
        if not path.exists():
            raise ConfigError(f"no such file or folder: {path}", path=r.path,
                              key=f"{r.sub('trust_anchors')}[{i}]")
        paths.append(path)
    try:
        return load_trust_store(paths, include_shipped=include_shipped)
    except TrustStoreError as exc:
        raise r.error("trust_anchors", str(exc)) from None


def _account(r: Reader, index: int, trust: TrustStore | None = None) -> AccountConfig:
    from connector.auth.presets import MAIL_PROVIDERS, mail_provider

    name = r.get("name", str, required=True)
    if name and not _ACCOUNT_NAME.match(name):
        r.problem("name", "must be lower-case letters, digits, '.', '_' or '-' "
                      f"(it becomes a tag), got {name!r}")
    pec = r.get("pec", bool, False)
    preset_key = r.get("provider", str)
    mail_preset = mail_provider(preset_key)
    preset = provider(preset_key) if preset_key and mail_preset is None else None
    if preset_key and preset is None and mail_preset is None:
        r.problem("provider", f"unknown provider {preset_key!r}; known: "
                  f"{', '.join(sorted({*PROVIDERS, *MAIL_PROVIDERS}))}")
    if preset is not None:
        if r.has("pec") and not pec:
            r.problem("pec", f"provider {preset_key!r} is a PEC provider; remove "
                          "'pec: false' or the provider")
        pec = True
    protocol = r.choice("protocol", PROTOCOLS, "imap" if pec else None, required=not pec)
    protocol = protocol or "imap"  # its problem is noted: read the rest as IMAP
    if pec and protocol != "imap":
        r.problem("protocol", "PEC accounts are IMAP only (receipts and envelopes must "
                      "be kept in folders)")
    security = r.choice("security", SECURITIES, "tls")
    default_host = preset.imap_host if preset else None
    if mail_preset is not None:
        default_host = {"imap": mail_preset.imap_host, "pop3": mail_preset.pop3_host,
                        "graph": mail_preset.graph_host}[protocol] or None
        if default_host is None:
            raise r.error("protocol", f"{mail_preset.name} is not reached with {protocol}")
    elif protocol == "graph":
        default_host = "graph.microsoft.com"
    host = r.get("host", str, default_host, required=default_host is None)
    if security == "none" and host and not is_loopback(host):
        r.problem("security", f"'none' sends the password in clear text; it is allowed only "
                      f"for a loopback host, not {host!r}. Use tls or starttls")
    default_port = preset.imap_port if preset and security == "tls" else \
        _DEFAULT_PORTS[(protocol, security)]
    if mail_preset is not None and security == "tls" and protocol != "graph":
        default_port = mail_preset.imap_port if protocol == "imap" else mail_preset.pop3_port
    port = r.get("port", int, default_port)
    if not 0 < port < 65536:
        r.problem("port", f"must be a TCP port, got {port}")
    # PEC: like the Zendesk PEC connector, mail already in the box is not ingested on first
    # activation, and providers are polled every 4 minutes when IDLE is not available.
    initial_sync = r.choice("initial_sync", ("all", "skip_existing", "import_existing"),
                            "skip_existing" if pec else "all")
    unmatched = r.choice("pec_unmatched_receipts", ("new_ticket", "catch_all", "ignore"),
                         "new_ticket")
    catch_all = r.get("pec_catch_all_ticket", str)  # 4711 in YAML reads as "4711"
    pec_fields = r.field_map("pec_custom_fields")
    unknown_facts = sorted(set(pec_fields) - set(PEC_FACTS))
    if unknown_facts:
        r.problem("pec_custom_fields", f"unknown PEC fact {unknown_facts[0]!r}; one of "
                      f"{', '.join(PEC_FACTS)}")
    facts_note = r.choice("pec_facts_note", PEC_FACTS_NOTES, "auto")
    if unmatched == "catch_all" and catch_all is None:
        r.problem("pec_catch_all_ticket", "is required when pec_unmatched_receipts is "
                      "catch_all")
    processed_folder = r.get("processed_folder", str, "Processed")
    unknown_sender = r.get("unknown_sender", str, _unknown_sender_default(r))
    if unknown_sender != "ignore" and not _looks_like_address(unknown_sender):
        r.problem("unknown_sender", f"must be an e-mail address or 'ignore', not "
                  f"{unknown_sender!r}")
    pattern = r.get("subject_ticket_pattern", str, r"\[#(\d+)\]")
    try:
        if re.compile(pattern).groups < 1:
            r.problem("subject_ticket_pattern", "needs one capture group for the ticket id")
    except re.error as exc:
        r.problem("subject_ticket_pattern", f"is not a valid regex: {exc}")
    username = r.get("username", str, required=True)
    oauth_default = mail_preset is not None or protocol == "graph"
    auth = r.choice("auth", AUTH_METHODS, "oauth2" if oauth_default else "password")
    if protocol == "graph" and auth != "oauth2":
        r.problem("auth", "Microsoft Graph takes only OAuth2 tokens (auth: oauth2)")
    oauth2 = None
    if auth == "oauth2":
        from connector.auth.settings import read_oauth2

        if not r.has("oauth2"):
            raise r.error("oauth2", "is required with auth: oauth2 (provider, client_id ...)")
        oauth2 = read_oauth2(r.child("oauth2"), account=name, username=username,
                             protocol=protocol,
                             default_provider=mail_preset.oauth2_provider if mail_preset
                             else "microsoft" if protocol == "graph" else None)
    elif r.has("oauth2"):
        r.problem("oauth2", "is used only with auth: oauth2")
    verify_tls, insecure_tls = r.verify_tls(host or "")
    account = AccountConfig(
        name=name,
        protocol=protocol,
        host=host,
        port=port,
        security=security,
        username=username,
        password=r.secret("password", required=auth == "password"),
        auth=auth,
        oauth2=oauth2,
        ca_file=str(r.path_value("ca_file")) if r.has("ca_file") else None,
        verify_tls=verify_tls,
        insecure_tls_i_understand=insecure_tls,
        folder=r.get("folder", str, "INBOX"),
        processed_folder=processed_folder,
        error_folder=r.get("error_folder", str, "Error"),
        held_folder=r.get("held_folder", str, "Held"),
        ignored_folder=r.get("ignored_folder", str, processed_folder),
        delete_after_processing=r.get("delete_after_processing", bool, False),
        poll_interval=r.positive("poll_interval", float, 4.0 if pec else 5.0),
        initial_sync=initial_sync,
        max_size=r.size("max_size", 32 * 1024 * 1024),
        batch_size=r.positive("batch_size", int, 200),
        timeout=r.positive("timeout", float, 60.0),
        new_ticket=_ticket_defaults(r.child("new_ticket")),
        follow_up=_follow_up(r.child("follow_up")),
        history=_history(r.child("history")),
        allow_unknown_senders=r.get("allow_unknown_senders", bool, True),
        unknown_sender=unknown_sender,
        weak_signals=r.choice("weak_signals", ("tag", "ignore"), "tag"),
        email_ccs=r.get("email_ccs", bool, True),
        attach_original_eml=r.get("attach_original_eml", bool, False),
        allow_remote_content=r.get("allow_remote_content", bool, False),
        archive_dir=r.path_value("archive_dir"),
        own_addresses=tuple(a.lower() for a in r.str_list("own_addresses")),
        subject_ticket_pattern=pattern,
        trusted=r.get("trusted", bool, False),
        enabled=r.get("enabled", bool, True),
        idle=r.get("idle", bool, True),
        auto_disable=r.get("auto_disable", bool, True),
        max_failures=r.positive("max_failures", int, 10),
        tcp_keepalive_seconds=_non_negative(r, "tcp_keepalive_seconds", 60.0),
        idle_renew_seconds=r.positive("idle_renew_seconds", float, 290.0),
        pec=pec,
        provider=preset.key if preset else mail_preset.key if mail_preset else None,
        pec_unmatched_receipts=unmatched,
        pec_catch_all_ticket=catch_all,
        pec_custom_fields=pec_fields,
        pec_facts_note=facts_note,
        pec_trust=trust or shipped_trust_store(),
        authserv_ids=tuple(a.strip().lower() for a in r.str_list("authserv_id") if a.strip()),
        verify_dkim=r.get("verify_dkim", bool, True),
    )
    for key in ("processed_folder", "error_folder", "held_folder", "ignored_folder"):
        if protocol in ("imap", "graph") and getattr(account, key) == account.folder:
            r.problem(key, f"must differ from folder ({account.folder!r}): mail moved there "
                          "would be fetched again")
    if protocol == "pop3" and r.has("folder") and account.folder != "INBOX":
        r.problem("folder", "POP3 has no folders; remove it or use protocol: imap")
    r.finish(_ACCOUNT_EXTENSION_KEYS)
    return account


def token_file(state_dir: Path, account: str) -> Path:
    """Where an account's OAuth2 refresh token lives (mode 0600, never in the config)."""
    return state_dir / "oauth2" / f"{account}.json"


def _with_token_file(account: AccountConfig, state_dir: Path) -> AccountConfig:
    if account.oauth2 is None:
        return account
    return replace(account, oauth2=replace(account.oauth2,
                                           token_file=token_file(state_dir, account.name)))


def _non_negative(r: Reader, name: str, default: float) -> float:
    value = r.get(name, float, default)
    if value < 0:
        r.problem(name, f"must be 0 or more, got {value!r}")
        return default
    return float(value)


def _looks_like_address(text: str) -> bool:
    local, at, domain = text.strip().rpartition("@")
    return bool(at and local and "." in domain and " " not in text.strip())


def _unknown_sender_default(r: Reader) -> str:
    """``unknown-sender@`` the domain of the account's mailbox address or of its first own
    address (an address the helpdesk takes as a requester and an agent recognises), else
    ``unknown-sender@example.invalid`` (set ``unknown_sender`` then: a helpdesk may refuse it)."""
    own = r.data.get("own_addresses")
    candidates = [r.data.get("username"), *(own if isinstance(own, list) else [own])]
    for address in candidates:
        if isinstance(address, str) and "@" in address:
            domain = address.rpartition("@")[2].strip().lower()
            if "." in domain:
                return f"unknown-sender@{domain}"
    return "unknown-sender@example.invalid"


def _rate(r: Reader, name: str) -> Rate | None:
    if not r.has(name):
        return None
    try:
        return Rate.parse(r.get(name, (int, float, str)))
    except ValueError as exc:
        r.problem(name, str(exc))
        return None


#: The keys of the zendesk host type that a dry run without a url does not read: switching
#: host.type to dry-run and back leaves them in place.
_ZENDESK_ONLY_KEYS = ("auth", "timeout", "max_attempts", "verify_tls",
                      "insecure_tls_i_understand", "ca_file", "max_uploads_per_mail",
                      "max_ccs_per_mail", "rate_limit", "ticket_update_rate_limit")


def _host(r: Reader) -> HostConfig:
    host_type = r.choice("type", ("zendesk", "otobo", "dry-run"), required=True)
    if host_type not in ("zendesk", "otobo", "dry-run"):  # noted: the rest depends on the type
        r.ignore(*map(str, r.data))
        return HostConfig(type=host_type or "")
    if host_type == "otobo" or (host_type == "dry-run" and r.has("otobo")):
        return _otobo_host(r, host_type)
    if host_type == "dry-run" and not r.has("url"):
        cfg = HostConfig(type="dry-run", groups=r.int_map("groups"),
                         custom_fields=r.int_map("custom_fields"))
        r.ignore(*_ZENDESK_ONLY_KEYS)
        r.finish()
        return cfg
    # A dry-run with a url reads from that Zendesk (tickets, users) and writes nothing.
    url = (r.get("url", str, required=True) or "").rstrip("/")
    if url and not re.match(r"^https?://[^/\s]+$", url):
        r.problem("url", f"must be the instance's base URL such as "
                  f"https://acme.zendesk.com, got {url!r}")
    elif url.startswith("http://") and not is_loopback(url[7:].split(":")[0]):
        r.problem("url", "must use https:// (http:// is allowed only for loopback test hosts)")
    auth = r.child("auth")
    auth_type = auth.choice("type", ("oauth", "api_token"), required=True)
    client_id = client_secret = scope = email = api_token = ""
    if auth_type == "oauth":
        client_id = auth.get("client_id", str, required=True)
        client_secret = auth.secret("client_secret", required=True)
        scope = auth.get("scope", str, "read write")
    elif auth_type == "api_token":
        email = auth.get("email", str, required=True)
        api_token = auth.secret("api_token", required=True)
    else:  # noted: which keys belong depends on the type
        auth.ignore(*map(str, auth.data))
    auth.finish()
    verify_tls, insecure_tls = r.verify_tls(urlsplit(url).hostname or "")
    cfg = HostConfig(
        type=host_type,
        url=url,
        auth_type=auth_type or "",
        client_id=client_id,
        client_secret=client_secret,
        scope=scope,
        email=email,
        api_token=api_token,
        timeout=r.positive("timeout", float, 30.0),
        max_attempts=r.positive("max_attempts", int, 5),
        verify_tls=verify_tls,
        insecure_tls_i_understand=insecure_tls,
        ca_file=str(r.path_value("ca_file")) if r.has("ca_file") else None,
        max_uploads_per_mail=r.positive("max_uploads_per_mail", int, 20),
        max_ccs_per_mail=r.positive("max_ccs_per_mail", int, 20),
        groups=r.int_map("groups"),
        custom_fields=r.int_map("custom_fields"),
        rate_limit=_rate(r, "rate_limit"),
        ticket_update_rate_limit=_rate(r, "ticket_update_rate_limit"),
        max_in_flight=r.positive("max_in_flight", int, 8),
    )
    r.finish()
    return cfg


def _otobo_host(r: Reader, host_type: str) -> HostConfig:
    """OTOBO / Znuny: ``url`` is the web service's base, up to and including its name."""
    url = (r.get("url", str, required=True) or "").rstrip("/")
    if not re.match(r"^https?://[^/\s]+/\S*nph-genericinterface\.pl/Webservice(ID)?/[^/\s]+$",
                    url):
        r.problem("url", "must be the web service URL such as https://helpdesk.example.org"
                  "/otobo/nph-genericinterface.pl/Webservice/PostmasterBridge, "
                  f"got {url!r}")
    elif url.startswith("http://") and not is_loopback(url[7:].split("/")[0].split(":")[0]):
        r.problem("url", "must use https:// (http:// is allowed only for loopback test hosts)")
    o = r.child("otobo")
    names = {}
    for key, default in (("message_id_field", "PMBMessageID"),
                         ("article_key_field", "PMBArticleKey")):
        names[key] = o.get(key, str, default)
    otobo = OtoboHostConfig(
        user=o.get("user", str, required=True),
        password=o.secret("password", required=True),
        queue=o.get("queue", str, "Raw"),
        state=o.get("state", str, "new"),
        priority=o.get("priority", str, "3 normal"),
        ticket_type=o.get("type", str, None),
        tags_field=o.get("tags_field", str, None),
        receipt_state_field=o.get("receipt_state_field", str, None),
        max_length=o.size("max_length", 100_000_000),
        ticket_hook=o.get("ticket_hook", str, "Ticket#"),
        states={str(k): str(v) for k, v in o.get("states", dict, {}).items()},
        priorities={str(k): str(v) for k, v in o.get("priorities", dict, {}).items()},
        **names,
    )
    o.finish()
    # As for Zendesk: unverified TLS only for loopback or when acknowledged.
    verify_tls, insecure_tls = r.verify_tls(urlsplit(url).hostname or "")
    cfg = HostConfig(
        type=host_type,
        url=url,
        timeout=r.positive("timeout", float, 30.0),
        max_attempts=r.positive("max_attempts", int, 5),
        verify_tls=verify_tls,
        insecure_tls_i_understand=insecure_tls,
        ca_file=str(r.path_value("ca_file")) if r.has("ca_file") else None,
        max_in_flight=r.positive("max_in_flight", int, 8),
        otobo=otobo,
    )
    r.finish()
    return cfg


def _server_limits(r: Reader, base: ServerLimits, source: str) -> ServerLimits:
    limits = _server_limits_keys(r, base, source)
    r.finish()
    return limits


def _connections(r: Reader) -> ConnectionsConfig:
    default = _server_limits_keys(r, ServerLimits(), "connections")
    servers: dict[str, ServerLimits] = {}
    listed = r.child("servers")
    for name in list(listed.data):
        key = str(name).lower()
        base = KNOWN_SERVERS.get(key.rsplit(":", 1)[0], default)
        servers[key] = _server_limits(listed.child(str(name)), base,
                                      f"connections.servers.{name}")
    listed.finish()
    r.finish()
    return ConnectionsConfig(default=default, servers=servers)


def _server_limits_keys(r: Reader, base: ServerLimits, source: str) -> ServerLimits:
    """``login_rate`` (0: no pacing), ``login_burst`` and ``max_connections`` (0: no cap) in
    ``r``, over ``base``; ``source`` names where they came from when any is given."""
    rate = r.get("login_rate", float, base.login_rate)
    if rate < 0:
        r.problem("login_rate", f"must be 0 (no pacing) or more, got {rate!r}")
        rate = base.login_rate
    return ServerLimits(
        login_rate=float(rate),
        login_burst=r.positive("login_burst", int, base.login_burst),
        max_connections=int(_non_negative(r, "max_connections", base.max_connections)),
        source=source if any(r.has(k) for k in ("login_rate", "login_burst",
                                                  "max_connections")) else base.source)


#: Top-level keys validated by other stages (filters, outbound, service).
_TOP_EXTENSION_KEYS: tuple[str, ...] = ("filters", "service")


def load_config(path: str | os.PathLike[str], *, secrets: bool = True) -> Config:
    """Read and validate the whole file. Raises ConfigError naming file and key, or
    ConfigErrors with every problem of the file.

    ``secrets=False`` is for commands that never log in (``filters check``, ``filters
    test``): a secret whose variable is unset or whose file cannot be read is left empty and
    named in ``Config.missing_secrets`` instead of refusing the file."""
    cfg_path = Path(path)
    where = str(cfg_path)
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", path=where) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML{line}: {problem}", path=where) from None
    return config_from_mapping(data, where, cfg_path.resolve().parent, secrets=secrets)


def config_from_mapping(data: Any, where: str, base_dir: Path, *,
                        secrets: bool = True) -> Config:
    """Every section is read even after a problem, so one run reports all of them."""
    problems = Problems()
    missing: list[str] = []
    root = Reader(data if data is not None else {}, where, "", base_dir, problems=problems,
                  secrets=secrets, missing_secrets=missing)
    accounts_raw = root.get("accounts", list, required=True) or []
    if root.has("accounts") and isinstance(root.data["accounts"], list) and not accounts_raw:
        root.problem("accounts", "needs at least one account")
    trust = shipped_trust_store()
    with problems.collect():
        trust = _pec_trust(root.child("pec"))
    accounts: list[AccountConfig] = []
    for i, raw in enumerate(accounts_raw):
        with problems.collect():
            accounts.append(_account(Reader(raw, where, f"accounts[{i}]", base_dir,
                                            problems=problems, secrets=secrets,
                                            missing_secrets=missing), i, trust))
    names = [a.name for a in accounts]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            problems.add(ConfigError(f"duplicate account name {name!r}", path=where,
                                     key=f"accounts[{i}].name"))
    host = HostConfig(type="")
    with problems.collect():
        host = _host(root.child("host"))
    for i, account in enumerate(accounts):
        if account.initial_sync == "import_existing" and host.otobo is not None:
            problems.add(ConfigError("import_existing needs a helpdesk with an import API "
                                     "(Zendesk); the OTOBO host has none", path=where,
                                     key=f"accounts[{i}].initial_sync"))
    for i, raw in enumerate(accounts_raw):
        zendesk_only = sorted(k for k in ("group_id", "brand_id", "brands", "custom_fields")
                              if isinstance(raw, Mapping)
                              and isinstance(raw.get("new_ticket"), Mapping)
                              and k in raw["new_ticket"])
        if host.otobo is not None and zendesk_only:
            problems.add(ConfigError(
                "Zendesk ids mean nothing to OTOBO: the queue is host.otobo.queue or a "
                "filter's X-OTOBO-Queue, dynamic fields a filter's X-OTOBO-DynamicField-*",
                path=where, key=f"accounts[{i}].new_ticket.{zendesk_only[0]}"))
    if host.otobo is not None:
        # OTOBO's subject references are [Ticket#<number>] unless an account says otherwise.
        pattern = otobo_ticket_pattern(host.otobo.ticket_hook)
        accounts = [a if "subject_ticket_pattern" in (accounts_raw[i] or {})
                    else replace(a, subject_ticket_pattern=pattern)
                    for i, a in enumerate(accounts)]
    store_reader = root.child("store")
    store_type = store_reader.choice("type", ("sqlite", "postgresql"), "sqlite")
    store_dsn = ""
    if store_type == "postgresql":
        store_dsn = store_reader.secret("dsn", required=True)
    elif store_reader.has("dsn") or store_reader.has("dsn_file"):
        store_reader.problem("dsn", "is for type: postgresql (SQLite takes path)")
    store_pool = store_reader.positive("pool_size", int, 10)
    store_path = store_reader.path_value("path") or (base_dir / "postmaster-bridge.sqlite3")
    retention = store_reader.positive("log_retention_days", float, 30.0)
    state_dir = store_reader.path_value("state_dir") or store_path.parent
    ledger_retention = store_reader.positive("retention_days", float, 30.0)
    store_reader.finish()
    connections = ConnectionsConfig()
    with problems.collect():
        connections = _connections(root.child("connections"))
    leases_reader = root.child("leases")
    leases = LeasesConfig(
        ttl=leases_reader.positive("ttl", float, LeasesConfig.ttl),
        local_liveness=leases_reader.get("local_liveness", bool, LeasesConfig.local_liveness))
    leases_reader.finish()
    limits_reader = root.child("limits")
    limits = ParseLimits(
        mime_parts=limits_reader.positive("mime_parts", int, ParseLimits.mime_parts),
        headers=limits_reader.positive("headers", int, ParseLimits.headers),
        header_bytes=limits_reader.size("header_bytes", ParseLimits.header_bytes),
    )
    limits_reader.finish()
    accounts = [_with_token_file(a, state_dir) for a in accounts]
    root.finish(_TOP_EXTENSION_KEYS)
    validate_outbound(root.data, where, base_dir, secrets=secrets, problems=problems)
    _validate_filter_sections(root.data, where, problems)
    problems.raise_if_any()
    return Config(path=Path(where), accounts=tuple(accounts), host=host,
                  store=StoreConfig(path=store_path, log_retention_days=retention,
                                    state_dir=state_dir, retention_days=ledger_retention,
                                    type=store_type or "sqlite", dsn=store_dsn,
                                    pool_size=store_pool),
                  raw=dict(root.data), limits=limits, pec_trust=trust,
                  connections=connections, missing_secrets=tuple(missing), leases=leases)


def _validate_filter_sections(data: Mapping[str, Any], where: str, problems: Problems) -> None:
    """The ``filters:`` sections (global and per account) belong to the filter stage, which
    reads them when it starts; checked here too so that their problems come with the rest."""
    with problems.collect():
        FilterSettings.from_mapping(data.get("filters"), path=where, key="filters")
    accounts = data.get("accounts")
    for i, raw in enumerate(accounts if isinstance(accounts, list) else []):
        if isinstance(raw, Mapping) and raw.get("filters") is not None:
            with problems.collect():
                FilterSettings.from_mapping(raw.get("filters"), path=where,
                                            key=f"accounts[{i}].filters")
