"""A host adapter that changes nothing: it prints, as JSON lines, the calls it would make.

For trying a configuration against real mailboxes before any ticket is created. Every line has
``"dry_run": true``, the HTTP method and the path the real adapter would use, and a summary of
the body: attachments appear as filename, content type, size and sha256, never their bytes;
bodies as their length, hash and a short preview. The ticket fields are what the host's
``vocabulary`` makes of the controls. When the host is OTOBO/Znuny (a ``reader`` that is one),
the lines are its GenericInterface calls, built by that adapter; otherwise Zendesk's REST
calls.

Tickets it "creates" get negative ids ("-1", "-2", ...), so they can never be mistaken for real
ones, and it remembers them for the rest of the run: ``get_ticket`` and
``find_tickets_by_external_id`` find them, comments and tag calls update them. Anything else is
unknown (``None``, ``[]``, ``False``), unless a ``reader`` adapter is given: then reads about
real tickets and users are delegated to it (still without any write).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from connector.hosts.base import (
    Comment,
    CreatedTicket,
    HostAdapter,
    ImportResult,
    ImportTicket,
    NewTicket,
    TicketInfo,
    Upload,
    Vocabulary,
)
from connector.hosts.bounded import bound_ccs, bound_uploads

_PREVIEW_CHARS = 120


def _upload_summary(upload: Upload) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "filename": upload.filename,
        "content_type": upload.content_type,
        "size": len(upload.data),
        "sha256": hashlib.sha256(upload.data).hexdigest(),
    }
    if upload.content_id:
        summary["content_id"] = upload.content_id
    return summary


def _text_summary(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    return {
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        "preview": " ".join(text.split())[:_PREVIEW_CHARS],
    }


@dataclass
class _FakeTicket:
    info: TicketInfo
    comments: list[dict[str, Any]] = field(default_factory=list)


class DryRunAdapter:
    """HostAdapter that writes one JSON line per call to ``out`` and sends nothing."""

    name = "dry-run"

    def __init__(self, out: TextIO, *, reader: HostAdapter | None = None,
                 max_uploads_per_mail: int = 0, max_ccs_per_mail: int = 0,
                 vocabulary: Vocabulary | None = None) -> None:
        self._out = out
        self._reader = reader
        if vocabulary is None:
            from connector.hosts.zendesk_fields import ZendeskVocabulary

            vocabulary = ZendeskVocabulary()
        self.vocabulary = vocabulary
        # The per-mail limits the real adapter applies (connector.hosts.bounded), so the dry
        # run shows the calls the real run would make.
        self._max_uploads = max_uploads_per_mail
        self._max_ccs = max_ccs_per_mail
        self._lock = threading.Lock()
        self._tickets: dict[str, _FakeTicket] = {}
        self._next_id = -1

    # -- output ----------------------------------------------------------------------------------

    def _emit(self, method: str, path: str, **fields: Any) -> None:
        line = {"dry_run": True, "method": method, "path": path}
        line.update({k: v for k, v in fields.items() if v is not None})
        text = json.dumps(line, ensure_ascii=False, sort_keys=True, default=str)
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    # -- HostAdapter -----------------------------------------------------------------------------

    def _read(self, rest: tuple[str, str, dict[str, Any]],
              otobo: tuple[str, str, str, dict[str, Any]]) -> None:
        """One line for a read: the GenericInterface call when the host is OTOBO/Znuny
        (``method, path, operation, body``), else the Zendesk REST request (``rest``)."""
        if self._otobo() is not None:
            method, path, operation, body = otobo
            self._emit(method, path, operation=operation, body=body or None)
        else:
            method, path, fields = rest
            self._emit(method, path, **fields)

    def check_credentials(self) -> str:
        self._read(("GET", "/api/v2/users/me", {}), ("POST", "/Session", "SessionCreate", {}))
        if self._reader is not None:
            return f"dry run (reads as {self._reader.check_credentials()})"
        return "dry run: nothing is sent to any helpdesk"

    def _uploads(self, uploads: tuple[Upload, ...]) -> tuple[Upload, ...]:
        bounded = bound_uploads(uploads, self._max_uploads, max_bytes=2**62).uploads
        for upload in bounded:
            self._emit("POST", "/api/v2/uploads", upload=_upload_summary(upload))
        return bounded

    def _keeps_tags(self) -> bool:
        otobo = self._otobo()
        return otobo is None or bool(otobo.settings.tags_field)

    def _otobo(self) -> Any:
        """The OTOBO/Znuny adapter when the dry run reads from one: its calls are shown."""
        from connector.hosts.otobo import OtoboAdapter

        return self._reader if isinstance(self._reader, OtoboAdapter) else None

    def _create_otobo(self, otobo: Any, ticket: NewTicket, ticket_id: str) -> CreatedTicket:
        from connector.hosts.otobo_payload import summarized

        field = otobo.settings.message_id_field
        self._emit("POST", "/TicketSearch", operation="TicketSearch",
                   body={f"DynamicField_{field}": {"Equals": ticket.external_id}})
        self._emit("POST", "/Ticket", operation="TicketCreate",
                   body=summarized(otobo.create_request(ticket)), result={"id": ticket_id})
        return CreatedTicket(id=ticket_id, replayed=False)

    def create_ticket(self, ticket: NewTicket) -> CreatedTicket:
        otobo = self._otobo()
        if otobo is not None:
            with self._lock:
                ticket_id = self._new_id()
                self._tickets[ticket_id] = _FakeTicket(TicketInfo(
                    id=ticket_id, status="new", subject=ticket.subject,
                    requester_email=ticket.requester_email, tags=tuple(ticket.tags),
                    external_id=ticket.external_id))
            return self._create_otobo(otobo, ticket, ticket_id)
        uploads = self._uploads(ticket.uploads)
        ccs, _listed = bound_ccs(ticket.email_ccs, self._max_ccs)
        fields = dict(self.vocabulary.translate(ticket.defaults, ticket.controls).fields)
        with self._lock:
            ticket_id = self._new_id()
            self._tickets[ticket_id] = _FakeTicket(
                TicketInfo(
                    id=ticket_id,
                    status=str(fields.get("status") or "new"),
                    subject=ticket.subject,
                    requester_email=ticket.requester_email,
                    cc_emails=ccs,
                    tags=tuple(dict.fromkeys(ticket.tags)),
                    external_id=ticket.external_id,
                )
            )
        self._emit(
            "POST",
            "/api/v2/tickets",
            idempotency_key=ticket.idempotency_key,
            ticket={
                "subject": ticket.subject,
                "requester": {"name": ticket.requester_name, "email": ticket.requester_email},
                "public": ticket.public,
                "body_text": _text_summary(ticket.body_text),
                "body_html": _text_summary(ticket.body_html),
                "uploads": len(uploads),
                "tags": list(ticket.tags),
                **fields,
                "recipient": ticket.recipient,
                "email_ccs": list(ccs),
                "external_id": ticket.external_id,
                "follows_up": ticket.follows_up,
            },
            result={"id": ticket_id},
        )
        return CreatedTicket(id=ticket_id, replayed=False)

    def add_comment(self, comment: Comment) -> None:
        otobo = self._otobo()
        if otobo is not None:
            from connector.hosts.otobo_payload import summarized

            payload, changes = otobo.comment_request(comment, None)
            if changes:
                payload["Ticket"] = changes
            self._emit("PATCH", "/Ticket/:TicketID", operation="TicketUpdate",
                       ticket=comment.ticket_id, body=summarized(payload))
            self._note_comment(comment)
            return
        uploads = self._uploads(comment.uploads)
        changes = self.vocabulary.translate(comment.defaults, comment.controls,
                                            follow_up=True).fields
        self._emit(
            "PUT",
            f"/api/v2/tickets/{comment.ticket_id}",
            comment={
                "public": comment.public,
                "author_email": comment.author_email,
                "author_name": comment.author_name,
                "body_text": _text_summary(comment.body_text),
                "body_html": _text_summary(comment.body_html),
                "uploads": len(uploads),
                "dedupe_key": comment.dedupe_key,
            },
            **changes,
            add_tags=list(comment.add_tags) or None,
            remove_tags=list(comment.remove_tags) or None,
        )
        self._note_comment(comment)

    def _note_comment(self, comment: Comment) -> None:
        with self._lock:
            fake = self._tickets.get(comment.ticket_id)
            if fake is None:
                return
            tags = _changed_tags(fake.info.tags, comment.add_tags, comment.remove_tags)
            status = self.vocabulary.translate(comment.defaults, comment.controls,
                                               follow_up=True).fields.get("status")
            fake.info = replace(fake.info, status=str(status or fake.info.status), tags=tags)
            fake.comments.append({"dedupe_key": comment.dedupe_key, "public": comment.public})

    def get_ticket(self, ticket_id: str) -> TicketInfo | None:
        self._read(("GET", f"/api/v2/tickets/{ticket_id}", {}),
                   ("GET", f"/Ticket/<TicketID of {ticket_id}>", "TicketGet", {}))
        with self._lock:
            fake = self._tickets.get(ticket_id)
        if fake is not None:
            return fake.info
        if self._reader is not None and not ticket_id.startswith("-"):
            return self._reader.get_ticket(ticket_id)
        return None

    def find_tickets_by_external_id(self, external_id: str) -> list[TicketInfo]:
        otobo = self._otobo()
        field = f"DynamicField_{otobo.settings.message_id_field}" if otobo is not None else ""
        self._read(("GET", "/api/v2/tickets", {"query": {"external_id": external_id}}),
                   ("POST", "/TicketSearch", "TicketSearch", {field: {"Equals": external_id}}))
        with self._lock:
            found = [f.info for f in self._tickets.values() if f.info.external_id == external_id]
        if self._reader is not None:
            found += self._reader.find_tickets_by_external_id(external_id)
        return found

    def comment_exists(self, ticket_id: str, dedupe_key: str) -> bool:
        # A dry run never wrote a comment, so none of ours can be there.
        self._read(("GET", f"/api/v2/tickets/{ticket_id}/audits", {"dedupe_key": dedupe_key}),
                   ("GET", f"/Ticket/<TicketID of {ticket_id}>", "TicketGet",
                    {"AllArticles": 1, "dedupe_key": dedupe_key}))
        return False

    def user_exists(self, email: str) -> bool:
        self._read(("GET", "/api/v2/users/search", {"query": {"query": f"email:{email}"}}),
                   ("POST", "/TicketSearch", "TicketSearch",
                    {"CustomerUserLogin": email, "Limit": 1}))
        if self._reader is not None:
            return self._reader.user_exists(email)
        return False

    def add_tags(self, ticket_id: str, tags: list[str]) -> None:
        if not self._keeps_tags():
            return  # OTOBO without a tags_field: the adapter sends nothing
        self._read(("PUT", f"/api/v2/tickets/{ticket_id}/tags", {"tags": list(tags)}),
                   ("PATCH", f"/Ticket/<TicketID of {ticket_id}>", "TicketUpdate",
                    {"add_tags": list(tags)}))
        self._retag(ticket_id, tags, ())

    def remove_tags(self, ticket_id: str, tags: list[str]) -> None:
        if not self._keeps_tags():
            return  # OTOBO without a tags_field: the adapter sends nothing
        self._read(("DELETE", f"/api/v2/tickets/{ticket_id}/tags", {"tags": list(tags)}),
                   ("PATCH", f"/Ticket/<TicketID of {ticket_id}>", "TicketUpdate",
                    {"remove_tags": list(tags)}))
        self._retag(ticket_id, (), tags)

    # -- history import --------------------------------------------------------------------------

    import_batch_size = 100

    def import_results(self, job_id: str, count: int) -> list[ImportResult] | None:
        return None  # a dry run starts no job

    def import_tickets(self, tickets: list[ImportTicket], *, archive_closed: bool = False,
                       on_job: Callable[[str], None] | None = None) -> list[ImportResult]:
        """One line per import call, as the Zendesk adapter would make it (create_many for
        more than one ticket); the tickets are remembered like created ones."""
        results: list[ImportResult] = []
        summaries: list[dict[str, Any]] = []
        for item in tickets:
            ticket = item.ticket
            for upload in (*ticket.uploads, *(u for d in item.comments for u in d.comment.uploads)):
                self._emit("POST", "/api/v2/uploads", upload=_upload_summary(upload))
            fields = dict(self.vocabulary.translate(ticket.defaults, ticket.controls).fields)
            status = item.status or fields.get("status")
            created = self._remember_ticket(ticket, str(status or "new"))
            results.append(ImportResult(created))
            summaries.append({
                "id": created,
                "subject": ticket.subject,
                "requester": {"name": ticket.requester_name, "email": ticket.requester_email},
                "created_at": item.created_at.isoformat(),
                "updated_at": item.updated_at.isoformat(),
                **fields,
                "status": status,
                "tags": list(ticket.tags),
                "external_id": ticket.external_id,
                "comments": [{"created_at": item.created_at.isoformat(), "public": ticket.public,
                              "author_email": ticket.requester_email,
                              "body_text": _text_summary(ticket.body_text)}]
                + [{"created_at": d.created_at.isoformat(), "public": d.comment.public,
                    "author_email": d.comment.author_email,
                    "body_text": _text_summary(d.comment.body_text)} for d in item.comments],
            })
        path = "/api/v2/imports/tickets" + ("/create_many" if len(tickets) > 1 else "")
        self._emit("POST", path, query={"archive_immediately": "true"} if archive_closed
                   else None, tickets=summaries)
        return results

    def _remember_ticket(self, ticket: NewTicket, status: str) -> str:
        with self._lock:
            ticket_id = self._new_id()
            self._tickets[ticket_id] = _FakeTicket(TicketInfo(
                id=ticket_id, status=status, subject=ticket.subject,
                requester_email=ticket.requester_email, cc_emails=tuple(ticket.email_ccs),
                tags=tuple(dict.fromkeys(ticket.tags)), external_id=ticket.external_id))
        return ticket_id

    # -- bookkeeping -----------------------------------------------------------------------------

    def _new_id(self) -> str:
        """The next made-up ticket id (the caller holds the lock)."""
        ticket_id = str(self._next_id)
        self._next_id -= 1
        return ticket_id

    def _retag(self, ticket_id: str, add: Any, remove: Any) -> None:
        with self._lock:
            fake = self._tickets.get(ticket_id)
            if fake is not None:
                fake.info = replace(fake.info, tags=_changed_tags(fake.info.tags, add, remove))

    @property
    def created(self) -> list[TicketInfo]:
        """Tickets this run would have created, in order."""
        with self._lock:
            return [f.info for _, f in sorted(self._tickets.items(), key=lambda kv: -int(kv[0]))]


def _changed_tags(
    current: tuple[str, ...], add: Any, remove: Any
) -> tuple[str, ...]:
    dropped = {t.lower() for t in remove}
    kept = [t for t in current if t.lower() not in dropped]
    kept += [t for t in add if t not in kept]
    return tuple(kept)
