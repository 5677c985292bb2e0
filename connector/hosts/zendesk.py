"""Zendesk Support adapter: tickets, comments, uploads and tags over the REST API.

Facts this module relies on (Zendesk's OpenAPI description in shared/zendesk-oas and the notes
in shared/notes/host-apis.md section 1):

- Ticket creation honours ``Idempotency-Key`` for two hours; a replay answers with
  ``x-idempotency-lookup: hit``, the same key with a different body answers 400
  ``IdempotentRequestError``. Upload tokens are part of the body and live 60 minutes, so a retry
  must resend the very same bytes with the same tokens: :meth:`ZendeskAdapter.prepare_ticket`
  fixes them in a :class:`PreparedRequest` the caller can persist, :meth:`send_prepared` sends it.
- Comments are added with ``PUT /api/v2/tickets/{id}``; nothing deduplicates them. The adapter
  writes ``Comment.dedupe_key`` into the update's audit metadata (``ticket.metadata`` is
  documented write-only on TicketObject; Zendesk stores it as ``audit.metadata.custom``) and
  :meth:`comment_exists` reads it back from ``GET /api/v2/tickets/{id}/audits``.
- ``additional_tags``/``remove_tags`` are not in the OAS for a single-ticket update, so a comment
  that also changes tags reads the ticket and sends the whole new ``tags`` list with
  ``safe_update``/``updated_stamp`` (both in TicketUpdateInput): one update, and a concurrent
  change gives 409 instead of lost tags.
- Updates are limited to 30 per ticket in 10 minutes: a per-ticket sliding window waits before
  the 31st.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import mimetypes
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from connector.errors import (
    ConfigError,
    HostCertificateError,
    HostError,
    PermanentHostError,
    TicketClosedError,
    TransientHostError,
)
from connector.hosts.base import (
    Comment,
    CreatedTicket,
    ImportResult,
    ImportTicket,
    NewTicket,
    TicketInfo,
    Upload,
    first_ticket,
)
from connector.hosts.bounded import bound_ccs, bound_uploads, cc_note
from connector.hosts.ratelimit import Rate, RequestPacer
from connector.hosts.retry import (
    RetryPolicy,
    SlidingWindowLimiter,
    call_with_retries,
    parse_retry_after,
)
from connector.hosts.transport import HostTransport
from connector.hosts.zendesk_fields import ZendeskVocabulary
from connector.hosts.zendesk_import import IMPORT_BATCH_SIZE, TicketImport
from connector.mail.filenames import safe_filename
from connector.tls import certificate_failure, describe_certificate_failure, warn_unverified

if TYPE_CHECKING:
    from connector.config import HostConfig

log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: Observer of every HTTP answer (the OAuth token request and refused tokens included):
#: ``(method, status)``. connector/service/metrics.py counts them.
ResponseObserver = Callable[[str, int], None]

#: Key under ``ticket.metadata`` (Zendesk: ``audit.metadata.custom``) that carries a comment's
#: dedupe key, so a retry after a crash can find out whether the comment already arrived.
DEDUPE_METADATA_KEY = "pmb_key"
#: Zendesk deletes unused uploads after 60 minutes; a prepared request older than this is
#: re-prepared before it is sent (margin for the send itself and clock drift).
PREPARED_UPLOADS_MAX_AGE = 50 * 60
#: Zendesk forgets an Idempotency-Key after 2 hours; past this age a replay no longer protects
#: against a duplicate, so the adapter looks the ticket up by external_id first.
PREPARED_KEY_MAX_AGE = 110 * 60
TICKET_UPDATE_LIMIT = 30
TICKET_UPDATE_WINDOW = 600.0
#: How long "no such user" is believed; a ticket create may add the user meanwhile.
NEGATIVE_USER_CACHE_SECONDS = 300.0
#: A ticket this adapter created or updated is known for this long without reading it again:
#: a reply that follows soon after (a backlog, a conversation) needs no GET before its
#: comment. An agent's change meanwhile shows up at the update (a closed ticket refuses it
#: and the reply opens a follow-up ticket, as after a read).
KNOWN_TICKET_SECONDS = 600.0
_KNOWN_TICKETS = 4096
_PREPARED_CACHE_SIZE = 256
_ERROR_TEXT_LIMIT = 600
_CLOSED_MARKER = "closed prevents ticket update"
_USER_AGENT = "postmaster-bridge (+zendesk adapter)"


class TicketNotFoundError(PermanentHostError):
    """The ticket does not exist (deleted, merged away, or never there): open a new one."""

    def __init__(self, ticket_id: str, message: str = "", *, body: str | None = None) -> None:
        self.ticket_id = ticket_id
        super().__init__(message or f"ticket #{ticket_id} not found", status=404, body=body)


class StalePreparedRequest(TransientHostError):
    """A prepared create whose upload tokens have (or may have) expired, sent without the
    ``NewTicket`` needed to upload again. Drop the stored request and call ``create_ticket``
    (or ``send_prepared(prepared, ticket)``)."""


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthClientCredentials:
    """A confidential OAuth client using the ``client_credentials`` grant (no refresh token)."""

    client_id: str
    client_secret: str = field(repr=False)
    scope: str = "read write"
    token_lifetime: int = 2 * 3600  # requested expires_in; Zendesk accepts 300..172800


@dataclass(frozen=True)
class ApiTokenAuth:
    """Legacy e-mail + API token (Zendesk retires API tokens by 30 Apr 2027)."""

    email: str
    api_token: str = field(repr=False)


@dataclass(frozen=True)
class ZendeskSettings:
    base_url: str  # https://acme.zendesk.com (no /api/v2)
    auth: OAuthClientCredentials | ApiTokenAuth
    timeout: float | tuple[float, float] = (10.0, 60.0)  # seconds: (connect, read) or both
    max_attempts: int = 5
    max_backoff: float = 60.0
    upload_max_bytes: int = 50 * 1024 * 1024
    max_uploads_per_mail: int = 20  # the rest in one ZIP archive (connector.hosts.bounded)
    max_ccs_per_mail: int = 20  # the rest listed in the ticket, not added as CCs
    verify_tls: bool = True  # False only for loopback or with insecure_tls_i_understand
    ca_file: str | None = None  # a CA bundle to verify the host with, instead of the system's
    # The plan's requests per minute (None: the X-Rate-Limit the host announces) and the
    # account-wide ticket-update budget (None: not paced; 429s are waited out).
    rate_limit: Rate | None = None
    ticket_update_rate_limit: Rate | None = None
    # How the control vocabulary maps (connector.hosts.zendesk_fields): queue names to group
    # ids (host.groups), dynamic field names to custom field ids (host.custom_fields).
    groups: Mapping[str, int] = field(default_factory=dict)
    custom_fields: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"Zendesk base_url must be http(s)://host, got {self.base_url!r}")
        if self.base_url.endswith("/"):
            object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if isinstance(self.auth, OAuthClientCredentials) and not (
            300 <= self.auth.token_lifetime <= 172_800
        ):
            raise ConfigError("OAuth token_lifetime must be between 300 and 172800 seconds")

    @classmethod
    def from_host_config(cls, cfg: HostConfig) -> ZendeskSettings:
        """Settings from the ``host:`` section of the bridge configuration."""
        auth: OAuthClientCredentials | ApiTokenAuth
        if cfg.auth_type == "oauth":
            auth = OAuthClientCredentials(cfg.client_id, cfg.client_secret, cfg.scope or "read")
        else:
            auth = ApiTokenAuth(cfg.email, cfg.api_token)
        return cls(
            base_url=cfg.url,
            auth=auth,
            timeout=(min(10.0, cfg.timeout), cfg.timeout),
            max_attempts=cfg.max_attempts,
            verify_tls=cfg.verify_tls,
            ca_file=cfg.ca_file,
            max_uploads_per_mail=cfg.max_uploads_per_mail,
            max_ccs_per_mail=cfg.max_ccs_per_mail,
            rate_limit=cfg.rate_limit,
            ticket_update_rate_limit=cfg.ticket_update_rate_limit,
            groups=dict(cfg.groups),
            custom_fields=dict(cfg.custom_fields),
        )


# -- prepared ticket creates --------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRequest:
    """A ticket create with uploads done and body bytes fixed: resend exactly this on retry.

    ``idempotency_key`` is what goes on the wire: ``base_key`` itself for generation 0, and
    ``base_key#gN`` after the adapter had to re-prepare (expired uploads, or Zendesk refusing
    the key), because a new body under the old key would get 400 IdempotentRequestError.
    """

    base_key: str | None
    generation: int
    body: bytes = field(repr=False)
    upload_tokens: tuple[str, ...]
    prepared_at: float  # wall-clock epoch seconds: it must survive a restart
    external_id: str | None
    ticket_fingerprint: str
    skipped_uploads: tuple[str, ...] = ()

    @property
    def idempotency_key(self) -> str | None:
        if self.base_key is None:
            return None
        return self.base_key if self.generation == 0 else f"{self.base_key}#g{self.generation}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["body"] = self.body.decode("utf-8")
        data["upload_tokens"] = list(self.upload_tokens)
        data["skipped_uploads"] = list(self.skipped_uploads)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedRequest:
        return cls(
            base_key=data["base_key"],
            generation=int(data["generation"]),
            body=str(data["body"]).encode("utf-8"),
            upload_tokens=tuple(data["upload_tokens"]),
            prepared_at=float(data["prepared_at"]),
            external_id=data.get("external_id"),
            ticket_fingerprint=str(data["ticket_fingerprint"]),
            skipped_uploads=tuple(data.get("skipped_uploads", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreparedRequest:
        return cls.from_dict(json.loads(text))


def ticket_fingerprint(ticket: NewTicket) -> str:
    """Identity of a NewTicket's content (uploads by hash), to match a stored prepared request."""

    def upload_id(u: Upload) -> list[Any]:
        return [u.filename, u.content_type, u.sha256, u.content_id]

    fields = {
        k: v for k, v in vars(ticket).items() if k not in ("uploads", "idempotency_key")
    }
    fields["uploads"] = [upload_id(u) for u in ticket.uploads]
    text = json.dumps(fields, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def serialize_body(payload: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes. Lone surrogates (undecodable mail bytes) become U+FFFD."""
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    try:
        return text.encode("utf-8")  # fails only on a lone surrogate: then it is replaced
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


# -- inline images ------------------------------------------------------------------------------

_CID_REF = re.compile(r"""cid:([^"'\s<>)]+)""", re.IGNORECASE)


def rewrite_cid_references(body_html: str, urls_by_cid: Mapping[str, str]) -> str:
    """Point ``cid:`` references at uploaded attachments; unknown ones stay as they are."""
    if not urls_by_cid:
        return body_html
    folded = {cid.strip("<>").lower(): url for cid, url in urls_by_cid.items()}

    def replace(match: re.Match[str]) -> str:
        ref = unquote(match.group(1)).strip("<>")
        url = urls_by_cid.get(ref) or folded.get(ref.lower())
        return html.escape(url, quote=True) if url else match.group(0)

    return _CID_REF.sub(replace, body_html)


def _safe_filename(upload: Upload) -> str:
    name = safe_filename(upload.filename or "")
    if name:
        return name
    ext = mimetypes.guess_extension(upload.content_type or "") or ".bin"
    return f"attachment{ext}"


def certificate_error(exc: BaseException, operation: str,
                      host: str) -> HostCertificateError | None:
    """The permanent error for a call whose TLS certificate did not verify, else None."""
    failure = certificate_failure(exc)
    if failure is None:
        return None
    return HostCertificateError(f"{operation}: {describe_certificate_failure(failure, host)}")


def _with_notes(body_text: str, body_html: str | None,
                notes: list[str | None]) -> tuple[str, str | None]:
    """The comment with a bracketed line per note appended (text and HTML)."""
    for note in notes:
        if note:
            body_text = f"{body_text}\n\n[{note}]"
            if body_html is not None:
                body_html = f"{body_html}\n<p>[{html.escape(note)}]</p>"
    return body_text, body_html


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size} bytes"


@dataclass(frozen=True)
class _UploadedComment:
    tokens: tuple[str, ...]
    body_text: str
    body_html: str | None
    skipped: tuple[str, ...]


# -- errors from responses -----------------------------------------------------------------------


def zendesk_error_text(resp: requests.Response) -> str:
    """Zendesk's own words for a failed call: error, description and field details."""
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:_ERROR_TEXT_LIMIT] or resp.reason or ""
    parts: list[str] = []
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, str):
            parts.append(err)
        elif isinstance(err, dict):
            parts.extend(str(err[k]) for k in ("title", "message") if err.get(k))
        for key in ("description", "error_description"):
            if isinstance(data.get(key), str):
                parts.append(data[key])
        details = data.get("details")
        if isinstance(details, dict):
            for name, items in details.items():
                for item in items if isinstance(items, list) else [items]:
                    text = item.get("description") if isinstance(item, dict) else item
                    parts.append(f"{name}: {text}")
        errors = data.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    parts.append(
                        " ".join(str(item[k]) for k in ("code", "title", "detail") if item.get(k))
                    )
    elif isinstance(data, str):
        parts.append(data)
    text = "; ".join(p for p in parts if p) or (resp.text or "").strip()
    return text[:_ERROR_TEXT_LIMIT]


def _is_idempotency_conflict(exc: HostError) -> bool:
    return exc.status == 400 and "IdempotentRequestError" in f"{exc} {exc.body or ''}"


def _is_upload_token_rejected(exc: HostError) -> bool:
    # [UNVERIFIED] Zendesk's exact answer to an expired upload token in a create is not
    # documented; any 4xx that speaks of an upload token is treated as one.
    text = f"{exc} {exc.body or ''}".lower()
    return exc.status in (400, 404, 422) and "upload" in text and "token" in text


# -- the adapter ---------------------------------------------------------------------------------


class ZendeskAdapter:
    """HostAdapter for Zendesk Support. Thread-safe for concurrent calls on distinct tickets."""

    name = "zendesk"

    def __init__(
        self,
        settings: ZendeskSettings,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        on_prepared: Callable[[PreparedRequest], None] | None = None,
    ) -> None:
        self.settings = settings
        self.vocabulary = ZendeskVocabulary(settings.groups, settings.custom_fields)
        self.on_retry: Callable[[], None] | None = None
        self.on_response: ResponseObserver | None = None
        if session is None:
            session = requests.Session()
        session.headers["User-Agent"] = _USER_AGENT
        self._session = session
        # Headers, proxies and TLS settings are fixed here once; see transport.py for what a
        # Zendesk API call does not need from Session.request (cookies, redirects, netrc).
        self._transport = HostTransport(
            session,
            settings.base_url,
            timeout=settings.timeout,
            verify=settings.ca_file or settings.verify_tls,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )
        self._host_name = urlsplit(settings.base_url).hostname or ""
        self._insecure_connections = 0  # connections opened without verification, warned
        warn_unverified(self._host_name, settings.verify_tls, "helpdesk")
        self._basic_auth: str | None = None
        if isinstance(settings.auth, ApiTokenAuth):
            raw = f"{settings.auth.email}/token:{settings.auth.api_token}".encode()
            self._basic_auth = "Basic " + base64.b64encode(raw).decode("ascii")
        self._sleep = sleep
        self._clock = clock
        self._wall = wall_clock
        self._on_prepared = on_prepared
        self._policy = RetryPolicy(settings.max_attempts, settings.max_backoff)
        self._limiter = SlidingWindowLimiter(
            TICKET_UPDATE_LIMIT, TICKET_UPDATE_WINDOW, clock=clock, sleep=sleep
        )
        # Pacing shares the retry loop's sleep, so a shutdown interrupts a wait for a slot too.
        self.pacer = RequestPacer(settings.rate_limit, name="zendesk requests", clock=clock,
                                  sleep=sleep)
        self.update_pacer = (
            RequestPacer(settings.ticket_update_rate_limit, name="zendesk ticket updates",
                         clock=clock, sleep=sleep)
            if settings.ticket_update_rate_limit else None
        )
        self._origin = urlsplit(settings.base_url)[:2]
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._prepared: OrderedDict[str, PreparedRequest] = OrderedDict()
        self._user_ids: dict[str, tuple[int | None, float]] = {}
        self._known: OrderedDict[str, tuple[TicketInfo, float]] = OrderedDict()
        self._created: dict[int, dict[str, Any]] = {}  # create answers, until send_prepared
        # (ticket, its fingerprint) of the last create prepared; see _fingerprint.
        self._last_fingerprint: tuple[weakref.ref[NewTicket], str] | None = None

    # -- HostAdapter -----------------------------------------------------------------------------

    def check_credentials(self) -> str:
        resp = self.request("GET", "/api/v2/users/me", operation="check credentials")
        user = self._json(resp, "check credentials").get("user") or {}
        if user.get("id") is None:
            raise PermanentHostError(
                "Zendesk answered as an anonymous user: the credentials were not accepted",
                status=resp.status_code,
            )
        return f"{user.get('name', '')} <{user.get('email', '')}> ({user.get('role', '?')})"

    def _remember_ticket(self, info: TicketInfo) -> None:
        with self._cache_lock:
            self._known[info.id] = (info, self._clock())
            self._known.move_to_end(info.id)
            while len(self._known) > _KNOWN_TICKETS:
                self._known.popitem(last=False)

    def _known_ticket(self, ticket_id: str) -> TicketInfo | None:
        with self._cache_lock:
            known = self._known.get(str(ticket_id))
        if known is None or self._clock() - known[1] > KNOWN_TICKET_SECONDS:
            return None
        return known[0]

    def _forget_ticket(self, ticket_id: str) -> None:
        with self._cache_lock:
            self._known.pop(str(ticket_id), None)

    def _learn_created(self, created: CreatedTicket, ticket: NewTicket | None) -> None:
        """What the create answer and the request tell about the new ticket and its requester:
        the reply that follows needs neither a ticket read nor a user search."""
        with self._cache_lock:
            answer = self._created.pop(int(created.id), None)
        if answer is None or ticket is None:
            return
        requester_id = answer.get("requester_id")
        if isinstance(requester_id, int):
            with self._cache_lock:
                self._user_ids[ticket.requester_email.strip().lower()] = (requester_id,
                                                                         self._clock())
        self._remember_ticket(TicketInfo(
            id=created.id, status=str(answer.get("status") or "new"),
            subject=str(answer.get("subject") or ticket.subject),
            requester_email=ticket.requester_email, cc_emails=tuple(ticket.email_ccs),
            tags=tuple(answer.get("tags") or ticket.tags),
            external_id=answer.get("external_id") or ticket.external_id))

    def _learn_commented(self, comment: Comment) -> None:
        known = self._known_ticket(comment.ticket_id)
        if known is None:
            return
        removed = {t.lower() for t in comment.remove_tags}
        tags = [t for t in known.tags if t.lower() not in removed]
        tags += [t for t in comment.add_tags if t not in tags]
        status = self.comment_fields(comment).get("status")
        self._remember_ticket(replace(known, status=status or known.status,
                                      tags=tuple(tags)))

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket:
        """Prepare (uploads, fixed body) and send. A retry with the same idempotency key within
        this process resends the cached bytes, so Zendesk answers with a replay."""
        prepared = self._cached_prepared(ticket)
        if prepared is None:
            prepared = self.prepare_ticket(ticket)
        return self.send_prepared(prepared, ticket)

    def add_comment(self, comment: Comment) -> None:
        label = f"comment on ticket #{comment.ticket_id}"
        uploaded = self._upload_all(comment.uploads, comment.body_text, comment.body_html, label)
        author_id = self._user_id(comment.author_email) if comment.author_email else None
        if comment.author_email and author_id is None:
            log.debug("%s: no Zendesk user for the author; the integration user writes it",
                      label)
        ambiguous_failure = False

        def attempt_once() -> None:
            nonlocal ambiguous_failure
            if ambiguous_failure and comment.dedupe_key:
                if self.comment_exists(comment.ticket_id, comment.dedupe_key):
                    log.info("%s: already on the ticket (an earlier attempt arrived)", label)
                    return
            try:
                self._put_comment(comment, uploaded, author_id)
            except TransientHostError as exc:
                # A 409 or 429 was refused for sure; anything else may have landed.
                ambiguous_failure = exc.status not in (409, 429)
                raise

        try:
            self._retry(label, attempt_once)
        except (TicketClosedError, TicketNotFoundError):
            self._forget_ticket(comment.ticket_id)
            raise
        self._learn_commented(comment)
        log.debug("%s: added (public=%s)", label, comment.public)

    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        if not _is_ticket_id(ticket_id):
            return None  # a subject pattern may find text that no Zendesk ticket can have
        known = self._known_ticket(ticket_id)
        if known is not None:
            return known
        resp = self.request(
            "GET",
            f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}",
            params={"include": "users"},
            allow={404},
            operation=f"get ticket #{ticket_id}",
        )
        if resp.status_code == 404:
            return None
        data = self._json(resp, f"get ticket #{ticket_id}")
        return self._ticket_info(data.get("ticket") or {}, data.get("users") or [])

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]:
        found: list[TicketInfo] = []
        op = f"find tickets by external_id {external_id!r}"
        for page in self.pages(
            "/api/v2/tickets", {"external_id": external_id, "include": "users"}, op
        ):
            users = page.get("users") or []
            found.extend(self._ticket_info(t, users) for t in page.get("tickets") or [])
        return found

    def comment_exists(self, ticket_id: str, dedupe_key: str) -> bool:
        op = f"audits of ticket #{ticket_id}"
        try:
            path = f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}/audits"
            for page in self.pages(path, None, op):
                for audit in page.get("audits") or []:
                    custom = (audit.get("metadata") or {}).get("custom") or {}
                    if isinstance(custom, dict) and custom.get(DEDUPE_METADATA_KEY) == dedupe_key:
                        return True
        except TicketNotFoundError:
            return False
        return False

    def user_exists(self, email: str) -> bool:
        return self._user_id(email) is not None

    # -- history (Ticket Import API: connector/hosts/zendesk_import.py) ------------------------

    import_batch_size = IMPORT_BATCH_SIZE

    def import_tickets(self, tickets: list[ImportTicket], *, archive_closed: bool = False,
                       on_job: Callable[[str], None] | None = None) -> list[ImportResult]:
        """Old conversations as tickets with their own dates, no triggers, no notifications."""
        return TicketImport(self).import_tickets(tickets, archive_closed=archive_closed,
                                                 on_job=on_job)

    def import_results(self, job_id: str, count: int) -> list[ImportResult] | None:
        return TicketImport(self).import_results(job_id, count)

    def _remember_user(self, email: str, user_id: int) -> None:
        with self._cache_lock:
            self._user_ids[email.strip().lower()] = (user_id, self._clock())

    def add_tags(self, ticket_id: str, tags: list[str]) -> None:
        if tags:
            self._tags_call("PUT", ticket_id, tags)

    def remove_tags(self, ticket_id: str, tags: list[str]) -> None:
        if tags:
            self._tags_call("DELETE", ticket_id, tags)

    # -- prepared creates ------------------------------------------------------------------------

    def prepare_ticket(self, ticket: NewTicket) -> PreparedRequest:
        """Upload the files and fix the create body. Persist ``to_json()`` before sending."""
        return self._prepare(ticket, generation=0)

    def prepared_from_json(self, text: str) -> PreparedRequest:
        """A PreparedRequest stored earlier with ``to_json()``."""
        prepared = PreparedRequest.from_json(text)
        self._remember_prepared(prepared)
        return prepared

    def send_prepared(
        self, prepared: PreparedRequest, ticket: NewTicket | None = None
    ) -> CreatedTicket:
        """Send a prepared create; byte-identical on every retry.

        Before sending, a request too old for its upload tokens (50 min) or for its
        idempotency key (110 min) is checked against ``find_tickets_by_external_id``: an
        earlier attempt may have created the ticket. Expired uploads are then done again from
        ``ticket`` under the next key generation; without ``ticket`` this raises
        ``StalePreparedRequest``. Zendesk refusing the key (400 IdempotentRequestError) or an
        upload token is handled the same way.
        """
        if ticket is not None and self._fingerprint(ticket) != prepared.ticket_fingerprint:
            # The stored bytes are what may already have reached Zendesk, so they are what is
            # resent; the differing ticket only serves if the request must be prepared again.
            log.warning("create %s: the ticket differs from the prepared request",
                        prepared.idempotency_key)
        age = self._wall() - prepared.prepared_at
        uploads_stale = bool(prepared.upload_tokens) and age > PREPARED_UPLOADS_MAX_AGE
        if uploads_stale or age > PREPARED_KEY_MAX_AGE:
            existing = self._existing_ticket(prepared.external_id)
            if existing is not None:
                return existing
            if uploads_stale:
                prepared = self._reprepare(prepared, ticket, "its uploads may have expired")
        try:
            created = self._post_ticket(prepared)
            self._learn_created(created, ticket)
            return created
        except PermanentHostError as exc:
            if _is_idempotency_conflict(exc):
                reason = "Zendesk holds a different request under its idempotency key"
            elif _is_upload_token_rejected(exc):
                reason = "Zendesk rejected its upload tokens"
            else:
                raise
            log.warning("create %s: %s", prepared.idempotency_key, reason)
            existing = self._existing_ticket(prepared.external_id)
            if existing is not None:
                return existing
            if prepared.external_id is None and _is_idempotency_conflict(exc):
                raise PermanentHostError(
                    f"{exc}; no external_id to check whether the ticket exists",
                    status=exc.status,
                    body=exc.body,
                ) from exc
            created = self._post_ticket(self._reprepare(prepared, ticket, reason))
            self._learn_created(created, ticket)
            return created

    # -- create internals ------------------------------------------------------------------------

    def _prepare(self, ticket: NewTicket, generation: int) -> PreparedRequest:
        label = f"create {ticket.idempotency_key or ticket.external_id or ticket.subject!r}"
        uploaded = self._upload_all(ticket.uploads, ticket.body_text, ticket.body_html, label)
        payload = {"ticket": self._create_payload(ticket, uploaded)}
        prepared = PreparedRequest(
            base_key=ticket.idempotency_key,
            generation=generation,
            body=serialize_body(payload),
            upload_tokens=uploaded.tokens,
            prepared_at=self._wall(),
            external_id=ticket.external_id,
            ticket_fingerprint=self._fingerprint(ticket),
            skipped_uploads=uploaded.skipped,
        )
        self._remember_prepared(prepared)
        if self._on_prepared is not None:
            self._on_prepared(prepared)
        return prepared

    def _fingerprint(self, ticket: NewTicket) -> str:
        """ticket_fingerprint, once per ticket object: a create prepares and then sends the
        same ticket, and the fingerprint serializes all of it. A weak reference, so a sent
        ticket's files are not kept alive until the next one."""
        remembered = self._last_fingerprint
        if remembered is not None and remembered[0]() is ticket:
            return remembered[1]
        fingerprint = ticket_fingerprint(ticket)
        self._last_fingerprint = (weakref.ref(ticket), fingerprint)
        return fingerprint

    def _reprepare(
        self, prepared: PreparedRequest, ticket: NewTicket | None, reason: str
    ) -> PreparedRequest:
        if ticket is None:
            raise StalePreparedRequest(
                f"prepared create {prepared.idempotency_key}: {reason}; "
                "call create_ticket with the ticket to upload again"
            )
        log.warning("create %s: %s; preparing it again", prepared.idempotency_key, reason)
        return self._prepare(ticket, generation=prepared.generation + 1)

    def _create_payload(self, ticket: NewTicket, uploaded: _UploadedComment) -> dict[str, Any]:
        comment: dict[str, Any] = (
            {"html_body": uploaded.body_html}
            if uploaded.body_html is not None
            else {"body": uploaded.body_text}
        )
        comment["public"] = ticket.public
        if uploaded.tokens:
            comment["uploads"] = list(uploaded.tokens)
        name = ticket.requester_name.strip() or ticket.requester_email.split("@")[0]
        body: dict[str, Any] = {
            "subject": ticket.subject,
            "requester": {"name": name, "email": ticket.requester_email},
            "comment": comment,
        }
        # status, priority, type, group, brand, custom fields: the controls, translated
        body.update(self.vocabulary.translate(ticket.defaults, ticket.controls).fields)
        optional = {
            "recipient": ticket.recipient,
            "external_id": ticket.external_id,
            "via_followup_source_id": (zendesk_ticket_id(ticket.follows_up)
                                       if ticket.follows_up else None),
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if ticket.tags:
            body["tags"] = list(ticket.tags)
        ccs, listed_only = bound_ccs(ticket.email_ccs, self.settings.max_ccs_per_mail)
        if ccs:
            body["email_ccs"] = [{"user_email": e, "action": "put"} for e in ccs]
        if listed_only:
            text, html_body = _with_notes(comment.get("body", ""), comment.get("html_body"),
                                          [cc_note(listed_only)])
            comment.update({"html_body": html_body} if html_body is not None else
                           {"body": text})
        return body

    def _post_ticket(self, prepared: PreparedRequest) -> CreatedTicket:
        headers = {"Content-Type": "application/json"}
        key = prepared.idempotency_key
        if key is not None:
            headers["Idempotency-Key"] = key
        label = f"create ticket {key or prepared.external_id or ''}".strip()
        resp = self.request(
            "POST",
            "/api/v2/tickets",
            data=prepared.body,
            headers=headers,
            operation=label,
            retry_ambiguous=key is not None,
        )
        ticket = self._json(resp, label).get("ticket") or {}
        if not isinstance(ticket.get("id"), int):
            raise TransientHostError(
                f"{label}: answer without a ticket id", status=resp.status_code
            )
        replayed = resp.headers.get("x-idempotency-lookup", "").lower() == "hit"
        log.debug("%s: ticket #%s %s", label, ticket["id"], "replayed" if replayed else "created")
        with self._cache_lock:
            self._created[ticket["id"]] = ticket
        return CreatedTicket(id=str(ticket["id"]), replayed=replayed)

    def _existing_ticket(self, external_id: str | None) -> CreatedTicket | None:
        if not external_id:
            return None
        found = self.find_tickets_by_external_id(external_id)
        if not found:
            return None
        first = first_ticket(found)
        log.info("ticket #%s already exists for external_id %r", first.id, external_id)
        return CreatedTicket(id=first.id, replayed=True)

    def _cached_prepared(self, ticket: NewTicket) -> PreparedRequest | None:
        if ticket.idempotency_key is None:
            return None
        with self._cache_lock:
            prepared = self._prepared.get(ticket.idempotency_key)
        if prepared is None or prepared.ticket_fingerprint != ticket_fingerprint(ticket):
            return None
        return prepared

    def _remember_prepared(self, prepared: PreparedRequest) -> None:
        if prepared.base_key is None:
            return
        with self._cache_lock:
            self._prepared[prepared.base_key] = prepared
            self._prepared.move_to_end(prepared.base_key)
            while len(self._prepared) > _PREPARED_CACHE_SIZE:
                self._prepared.popitem(last=False)

    # -- uploads ---------------------------------------------------------------------------------

    def _upload_all(
        self, uploads: tuple[Upload, ...], body_text: str, body_html: str | None, label: str
    ) -> _UploadedComment:
        """Upload every file, one token each: a retried upload then cannot add a file twice
        to a shared token. Inline images get their ``cid:`` references rewritten."""
        tokens: list[str] = []
        skipped: list[str] = []
        empty: list[str] = []
        urls_by_cid: dict[str, str] = {}
        limit = self.settings.upload_max_bytes
        bounded = bound_uploads(uploads, self.settings.max_uploads_per_mail, max_bytes=limit,
                                filename=_safe_filename)
        if bounded.archive is not None or bounded.left_out:
            log.warning("%s: %d attachments over the limit of %d per mail %s", label,
                        len(bounded.packed or bounded.left_out),
                        self.settings.max_uploads_per_mail,
                        "packed into one archive" if bounded.archive else "listed only")
        for upload in bounded.uploads:
            filename = _safe_filename(upload)
            if len(upload.data) > limit:
                log.warning(
                    "%s: %s (%d bytes) is over the upload limit; not attached",
                    label, filename, len(upload.data),
                )
                skipped.append(f"{filename} ({_human_size(len(upload.data))})")
                continue
            if not upload.data:
                # Zendesk refuses an empty upload; a zero-byte attachment carries nothing but
                # its name, which the comment keeps.
                empty.append(filename)
                continue
            token, content_url = self._upload(upload, filename, label)
            tokens.append(token)
            if upload.content_id and content_url:
                urls_by_cid[upload.content_id.strip("<>")] = content_url
        if body_html is not None:
            body_html = rewrite_cid_references(body_html, urls_by_cid)
        notes = [bounded.note()]
        if skipped:
            notes.append("Not attached, over the Zendesk upload limit of "
                         f"{_human_size(limit)}: " + ", ".join(skipped))
        if empty:
            notes.append("Not attached, empty (0 bytes): " + ", ".join(empty))
        body_text, body_html = _with_notes(body_text, body_html, notes)
        return _UploadedComment(tuple(tokens), body_text, body_html, tuple(skipped))

    def _upload(self, upload: Upload, filename: str, label: str) -> tuple[str, str | None]:
        op = f"{label}: upload {filename}"
        resp = self.request(
            "POST",
            "/api/v2/uploads",
            params={"filename": filename},
            data=upload.data,
            headers={"Content-Type": upload.content_type or "application/octet-stream"},
            operation=op,
        )
        data = self._json(resp, op).get("upload") or {}
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise TransientHostError(f"{op}: answer without an upload token")
        attachment = data.get("attachment") or {}
        if not attachment and data.get("attachments"):
            attachment = data["attachments"][-1]
        url = attachment.get("content_url")
        return token, url if isinstance(url, str) and url else None

    # -- comments and tags -----------------------------------------------------------------------

    def _put_comment(
        self, comment: Comment, uploaded: _UploadedComment, author_id: int | None
    ) -> None:
        body: dict[str, Any] = (
            {"html_body": uploaded.body_html}
            if uploaded.body_html is not None
            else {"body": uploaded.body_text}
        )
        body["public"] = comment.public
        if uploaded.tokens:
            body["uploads"] = list(uploaded.tokens)
        if author_id is not None:
            body["author_id"] = author_id
        update: dict[str, Any] = {"comment": body}
        update.update(self.comment_fields(comment))  # status, priority
        if comment.dedupe_key:
            update["metadata"] = {DEDUPE_METADATA_KEY: comment.dedupe_key}
        if comment.add_tags or comment.remove_tags:
            current = self._raw_ticket(comment.ticket_id)
            if current.get("status") == "closed":
                raise TicketClosedError(comment.ticket_id)
            old = [str(t) for t in current.get("tags") or []]
            removed = {t.lower() for t in comment.remove_tags}
            new = [t for t in old if t.lower() not in removed]
            new += [t for t in dict.fromkeys(comment.add_tags) if t not in new]
            if new != old:
                update["tags"] = new
                update["safe_update"] = True
                update["updated_stamp"] = current.get("updated_at")
        self._ticket_update(
            "PUT",
            comment.ticket_id,
            f"/api/v2/tickets/{zendesk_ticket_id(comment.ticket_id)}",
            {"ticket": update},
            f"comment on ticket #{comment.ticket_id}",
            retry=False,
        )

    def comment_fields(self, comment: Comment) -> dict[str, Any]:
        """The ticket changes a comment carries (``status``, ``priority``), translated from
        its follow-up controls."""
        return dict(self.vocabulary.translate(comment.defaults, comment.controls,
                                              follow_up=True).fields)

    def _tags_call(self, method: str, ticket_id: str, tags: list[str]) -> None:
        self._forget_ticket(ticket_id)  # its tags change: the next look reads them
        verb = "add tags to" if method == "PUT" else "remove tags from"
        self._ticket_update(
            method,
            ticket_id,
            f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}/tags",
            {"tags": list(tags)},
            f"{verb} ticket #{ticket_id}",
            retry=True,
        )

    def _ticket_update(
        self,
        method: str,
        ticket_id: str,
        path: str,
        payload: Mapping[str, Any],
        op: str,
        *,
        retry: bool,
    ) -> requests.Response:
        """One update of a ticket, counted against the per-ticket window before it is sent."""

        def send() -> requests.Response:
            self._limiter.acquire(zendesk_ticket_id(ticket_id))
            return self._send_checked(
                method,
                self._url(path),
                op,
                data=serialize_body(payload),
                headers={"Content-Type": "application/json"},
                ticket_id=ticket_id,
            )

        if not retry:
            return send()
        return self._retry(op, send)

    def _raw_ticket(self, ticket_id: str) -> dict[str, Any]:
        op = f"get ticket #{ticket_id}"
        resp = self.request("GET", f"/api/v2/tickets/{zendesk_ticket_id(ticket_id)}", operation=op,
                          ticket_id=ticket_id)
        return self._json(resp, op).get("ticket") or {}

    def _user_id(self, email: str) -> int | None:
        key = email.strip().lower()
        with self._cache_lock:
            cached = self._user_ids.get(key)
        now = self._clock()
        if cached is not None and (
            cached[0] is not None or now - cached[1] < NEGATIVE_USER_CACHE_SECONDS
        ):
            return cached[0]
        op = "search user by email"
        resp = self.request(
            "GET", "/api/v2/users/search", params={"query": f"email:{key}"}, operation=op
        )
        user_id = None
        # Only an exact primary address counts: a wrong author is worse than none.
        for user in self._json(resp, op).get("users") or []:
            if str(user.get("email") or "").strip().lower() == key and user.get("id"):
                user_id = int(user["id"])
                break
        with self._cache_lock:
            self._user_ids[key] = (user_id, now)
        return user_id

    def _ticket_info(self, ticket: Mapping[str, Any], users: list[Any]) -> TicketInfo:
        emails = {
            u.get("id"): u.get("email") for u in users if isinstance(u, dict) and u.get("email")
        }
        cc_ids = ticket.get("email_cc_ids") or ticket.get("collaborator_ids") or []
        return TicketInfo(
            id=str(ticket["id"]),
            status=str(ticket.get("status") or ""),
            subject=str(ticket.get("subject") or ""),
            requester_email=emails.get(ticket.get("requester_id")),
            cc_emails=tuple(emails[i] for i in cc_ids if i in emails),
            tags=tuple(ticket.get("tags") or ()),
            external_id=ticket.get("external_id"),
        )

    # -- HTTP ------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.settings.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        allow: set[int] | frozenset[int] = frozenset(),
        ticket_id: str | None = None,
        retry_ambiguous: bool = True,
    ) -> requests.Response:
        """Any Support API call with this adapter's auth, retries and per-ticket update limit
        (also used by the outbound side). ``allow``: statuses returned instead of raised.

        ``retry_ambiguous=False`` is for writes that are not idempotent: only failures that
        surely did not reach Zendesk's logic (429, 409, 503, connect errors) are retried.
        """
        url = path if path.startswith("http") else self._url(path)

        def send() -> requests.Response:
            try:
                return self._send_checked(
                    method, url, operation, params=params, data=data, headers=headers,
                    allow=allow, ticket_id=ticket_id,
                )
            except TransientHostError as exc:
                if not retry_ambiguous and not _surely_not_applied(exc):
                    raise _NoRetry(exc) from exc
                raise

        try:
            return self._retry(operation, send)
        except _NoRetry as wrapped:
            raise wrapped.error from wrapped.error.__cause__

    def _retry(self, operation: str, send: Callable[[], _T]) -> _T:
        return call_with_retries(self._policy, self._sleep, operation, send, self.on_retry)

    def _send_checked(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        allow: set[int] | frozenset[int] = frozenset(),
        ticket_id: str | None = None,
    ) -> requests.Response:
        resp = self._send(method, url, operation, params=params, data=data, headers=headers)
        status = resp.status_code
        if 200 <= status < 300 or status in allow:
            return resp
        text = zendesk_error_text(resp)
        message = f"{operation}: HTTP {status} {text}".rstrip()
        body = (resp.text or "")[:2000]
        if status in (429, 503):
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise TransientHostError(message, status=status, body=body, retry_after=retry_after)
        if status == 409 or status >= 500:
            raise TransientHostError(message, status=status, body=body)
        if ticket_id is not None and status == 422 and _CLOSED_MARKER in text.lower():
            raise TicketClosedError(ticket_id, message, body=body)
        if ticket_id is not None and status == 404:
            raise TicketNotFoundError(ticket_id, message, body=body)
        if 300 <= status < 400:
            message += f" (redirect to {resp.headers.get('Location', '?')}; check base_url)"
        raise PermanentHostError(message, status=status, body=body)

    def _send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> requests.Response:
        """One HTTP exchange; a 401 under OAuth renews the token and tries once more."""
        if urlsplit(url)[:2] != self._origin:
            # Credentials go to the configured Zendesk host only, never to a link it returns.
            raise PermanentHostError(f"{operation}: refusing to follow {url} off the Zendesk host")
        renewed = False
        while True:
            auth, fresh = self._authorization()
            # Accept: application/json is among the transport's fixed headers.
            resp = self._raw_request(
                method, url, operation, params=params, data=data,
                headers={**headers, "Authorization": auth} if headers else {"Authorization": auth},
            )
            if resp.status_code == 401 and self._basic_auth is None and not renewed \
                    and not fresh:
                log.info("%s: access token refused; requesting a new one", operation)
                self._invalidate_token(auth)
                renewed = True
                continue
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %s %s -> %s", operation, method, urlsplit(url).path,
                          resp.status_code)
            return resp

    def _raw_request(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        self.pacer.acquire()
        if (self.update_pacer is not None and method == "PUT"
                and _ticket_id_of(urlsplit(url).path) is not None):
            self.update_pacer.acquire()
        try:
            resp = self._transport.send(method, url, params=params, body=data, headers=headers)
        except requests.exceptions.SSLError as exc:
            permanent = certificate_error(exc, operation, self._host_name)
            if permanent is not None:
                raise permanent from exc
            raise TransientHostError(f"{operation}: TLS failed: {type(exc).__name__}") from exc
        except requests.ConnectTimeout as exc:
            raise TransientHostError(f"{operation}: connect timed out", status=None) from exc
        except requests.Timeout as exc:
            raise TransientHostError(f"{operation}: timed out waiting for Zendesk") from exc
        except requests.ConnectionError as exc:
            raise TransientHostError(
                f"{operation}: connection failed: {type(exc).__name__}"
            ) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise PermanentHostError(f"{operation}: bad URL {url}") from exc
        except requests.RequestException as exc:
            raise TransientHostError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        self.pacer.observe(resp.headers)
        if resp.status_code == 429:
            # Every worker of this adapter waits, not only the one that met the limit.
            self.pacer.pause(parse_retry_after(resp.headers.get("Retry-After")) or 1.0)
        if self.on_response is not None:
            self.on_response(resp.request.method or method, resp.status_code)
        if not self.settings.verify_tls:
            self._warn_new_connections(url)
        return resp

    def _warn_new_connections(self, url: str) -> None:
        """``insecure_tls_i_understand``: one warning per connection the pool opened."""
        try:
            pool = self._session.get_adapter(url).poolmanager.connection_from_url(url)
            opened = int(pool.num_connections)
        except (AttributeError, TypeError, ValueError):  # a test double's adapter
            return
        if opened > self._insecure_connections:
            self._insecure_connections = opened
            warn_unverified(self._host_name, False, "helpdesk")

    def _json(self, resp: requests.Response, operation: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as exc:
            # A proxy's HTML page or a cut-off answer: the call may work next time.
            raise TransientHostError(
                f"{operation}: HTTP {resp.status_code} answer is not JSON", status=resp.status_code
            ) from exc
        if not isinstance(data, dict):
            raise TransientHostError(f"{operation}: unexpected answer shape")
        return data

    def pages(
        self, path: str, params: Mapping[str, str] | None, operation: str
    ) -> Iterator[dict[str, Any]]:
        """Offset pagination: follow ``next_page`` (and cursor ``links.next``) to the end."""
        url: str | None = self._url(path)
        page_params = params
        ticket_id = _ticket_id_of(path)
        seen: set[str] = set()
        while url:
            resp = self.request("GET", url, params=page_params, operation=operation,
                              ticket_id=ticket_id)
            data = self._json(resp, operation)
            yield data
            next_url = data.get("next_page")
            meta = data.get("meta") or {}
            if not next_url and meta.get("has_more"):
                next_url = (data.get("links") or {}).get("next")
            if not next_url or next_url in seen:
                return
            seen.add(next_url)
            url, page_params = next_url, None

    # -- OAuth -----------------------------------------------------------------------------------

    def _authorization(self) -> tuple[str, bool]:
        """The Authorization header value, and whether a token was fetched just now."""
        if self._basic_auth is not None:
            return self._basic_auth, False
        auth = self.settings.auth
        assert isinstance(auth, OAuthClientCredentials)
        with self._token_lock:
            if self._token is not None and self._clock() < self._token_renew_at:
                return f"Bearer {self._token}", False
            self._fetch_token(auth)
            assert self._token is not None
            return f"Bearer {self._token}", True

    def _invalidate_token(self, header: str) -> None:
        with self._token_lock:
            if header == f"Bearer {self._token}":
                self._token = None

    def _fetch_token(self, auth: OAuthClientCredentials) -> None:
        op = "OAuth token request"
        payload = {
            "grant_type": "client_credentials",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
            "scope": auth.scope,
            "expires_in": auth.token_lifetime,
        }
        started = self._clock()
        resp = self._raw_request(
            "POST", self._url("/oauth/tokens"), op,
            data=json.dumps(payload, allow_nan=False).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        status = resp.status_code
        if status >= 500 or status == 429:
            raise TransientHostError(
                f"{op}: HTTP {status} {zendesk_error_text(resp)}".rstrip(),
                status=status,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise PermanentHostError(
                f"{op} refused: HTTP {status} {zendesk_error_text(resp)}".rstrip(), status=status
            )
        data = self._json(resp, op)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise PermanentHostError(f"{op}: answer without access_token", status=status)
        lifetime = data.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = auth.token_lifetime
        # Renew while at least 10% (and at least a minute) of the lifetime is left.
        margin = min(max(0.1 * lifetime, 60.0), lifetime / 2)
        self._token = token
        self._token_renew_at = started + lifetime - margin
        log.info("%s: new access token valid %ds (scope %s)", op, lifetime, data.get("scope"))


class _NoRetry(Exception):
    """Carries a transient error out of the retry loop without retrying it."""

    def __init__(self, error: TransientHostError) -> None:
        super().__init__(str(error))
        self.error = error


def _surely_not_applied(exc: TransientHostError) -> bool:
    """True when the request cannot have reached Zendesk's logic, so resending is safe."""
    if exc.status in (409, 429, 503):
        return True
    cause = exc.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError) and cause.args:
        reason = getattr(cause.args[0], "reason", cause.args[0])
        return isinstance(reason, NewConnectionError)
    return False


_TICKET_PATH = re.compile(r"^/api/v2/tickets/(\d+)(?:/|$)")


def _ticket_id_of(path: str) -> str | None:
    match = _TICKET_PATH.match(path)
    return match.group(1) if match else None


def _is_ticket_id(ticket_id: str) -> bool:
    text = str(ticket_id)
    return text.isascii() and text.isdigit() and 0 < len(text) <= 19 and int(text) > 0


def zendesk_ticket_id(ticket_id: str) -> int:
    """The bridge's opaque ticket id as Zendesk's integer id; a text that cannot be one is a
    ticket Zendesk does not have."""
    if not _is_ticket_id(ticket_id):
        raise TicketNotFoundError(str(ticket_id), f"#{ticket_id} is not a Zendesk ticket id")
    return int(ticket_id)
