"""Zendesk's Ticket Import API, for history: old mail becomes tickets with their own dates.

Facts relied on (Zendesk's OAS in shared/zendesk-oas: TicketImport, TicketBulkImport,
ShowJobStatus, CreateOrUpdateUser; the Ticket Import page; shared/notes/host-apis.md §1.2):

- ``POST /api/v2/imports/tickets`` takes one ticket and answers 201 with it;
  ``POST /api/v2/imports/tickets/create_many`` takes up to 100 and answers with a
  ``job_status`` to poll at ``GET /api/v2/job_statuses/{id}`` (queued, working, failed,
  completed; results kept one day). A created ticket's result is ``{"id", "index"}``
  (CreateResourceResult), in request order.
- An imported ticket may set ``created_at``, ``updated_at`` and ``solved_at``, and each comment
  its ``created_at`` and ``author_id`` (not before 1970, not in the future). Triggers do not
  run on an imported ticket unless it is closed, and no notification is sent.
  ``archive_immediately=true`` sends tickets imported as ``closed`` straight to the archive.
- Comments name their author by ``author_id`` only, so every author is looked up by e-mail and,
  when Zendesk has no such user, created with ``POST /api/v2/users/create_or_update`` (with
  ``skip_verify_email``: old correspondents get no welcome mail).
- Nothing deduplicates an import: the caller records the batch before sending and, after a
  crash or an unanswered call, looks each ticket up by ``external_id`` before sending again.
  (Zendesk's external_id lookup does not list archived tickets.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connector.errors import TransientHostError
from connector.hosts.base import ImportResult, ImportTicket
from connector.hosts.bounded import bound_ccs, cc_note

if TYPE_CHECKING:
    from connector.hosts.zendesk import ZendeskAdapter

log = logging.getLogger(__name__)

#: Zendesk's limit for one create_many call.
IMPORT_BATCH_SIZE = 100
#: Polling a job: first wait, growth factor and longest wait between two looks (seconds).
JOB_POLL_FIRST = 1.0
JOB_POLL_MAX = 15.0
#: A job that neither completes nor fails in this many looks is given up on (its outcome is
#: then unknown: the caller looks the tickets up by external_id).
JOB_POLL_LOOKS = 240
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zendesk_time(when: datetime, now: datetime) -> str:
    """An ISO 8601 UTC stamp Zendesk accepts for an import: not before 1970, not after now."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    clamped = min(max(aware.astimezone(UTC), _EPOCH), now)
    return clamped.strftime("%Y-%m-%dT%H:%M:%SZ")


class TicketImport:
    """Imports tickets through one ZendeskAdapter (its auth, retries, pacing and uploads)."""

    def __init__(self, adapter: ZendeskAdapter,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.adapter = adapter
        self.now = now

    def import_tickets(self, tickets: list[ImportTicket], *, archive_closed: bool = False,
                       on_job: Callable[[str], None] | None = None) -> list[ImportResult]:
        if not tickets:
            return []
        if len(tickets) > IMPORT_BATCH_SIZE:
            raise ValueError(f"at most {IMPORT_BATCH_SIZE} tickets per import call")
        bodies = [self._ticket_body(t) for t in tickets]
        params = {"archive_immediately": "true"} if archive_closed else None
        if len(tickets) == 1:
            return [self._import_one(bodies[0], params)]
        return self._import_many(bodies, params, on_job)

    def import_results(self, job_id: str, count: int) -> list[ImportResult] | None:
        """The results of an earlier create_many job (waited for if still running), or None
        when Zendesk no longer knows the job (results are kept one day)."""
        op = f"import job {job_id}"
        resp = self.adapter.request("GET", f"/api/v2/job_statuses/{job_id}", operation=op,
                                    allow={404})
        if resp.status_code == 404:
            return None
        job = self._wait_for(self.adapter._json(resp, op).get("job_status") or {}, op)
        return _job_results(job, count, op)

    # -- requests ---------------------------------------------------------------------------
    def _import_one(self, body: dict[str, Any], params: dict[str, str] | None) -> ImportResult:
        op = f"import ticket {body.get('external_id') or body.get('subject')!r}"
        resp = self.adapter.request(
            "POST", "/api/v2/imports/tickets", params=params,
            data=_json({"ticket": body}), headers={"Content-Type": "application/json"},
            operation=op, retry_ambiguous=False)
        ticket = self.adapter._json(resp, op).get("ticket") or {}
        if not isinstance(ticket.get("id"), int):
            raise TransientHostError(f"{op}: answer without a ticket id", status=resp.status_code)
        return ImportResult(ticket_id=str(ticket["id"]))

    def _import_many(self, bodies: list[dict[str, Any]], params: dict[str, str] | None,
                     on_job: Callable[[str], None] | None) -> list[ImportResult]:
        op = f"import {len(bodies)} tickets"
        resp = self.adapter.request(
            "POST", "/api/v2/imports/tickets/create_many", params=params,
            data=_json({"tickets": bodies}), headers={"Content-Type": "application/json"},
            operation=op, retry_ambiguous=False)
        job = self.adapter._json(resp, op).get("job_status") or {}
        if on_job is not None and isinstance(job.get("id"), str):
            on_job(job["id"])  # recorded: a crash while the job runs asks the job, not again
        job = self._wait_for(job, op)
        return _job_results(job, len(bodies), op)

    def _wait_for(self, job: dict[str, Any], op: str) -> dict[str, Any]:
        """Poll the job until it completes or fails; its last state."""
        wait = JOB_POLL_FIRST
        for _ in range(JOB_POLL_LOOKS):
            status = job.get("status")
            if status in ("completed", "failed"):
                return job
            job_id = job.get("id")
            if not isinstance(job_id, str) or not job_id:
                raise TransientHostError(f"{op}: job status without an id")
            self.adapter._sleep(wait)
            wait = min(wait * 1.5, JOB_POLL_MAX)
            look = f"{op}: job {job_id}"
            resp = self.adapter.request("GET", f"/api/v2/job_statuses/{job_id}", operation=look)
            job = self.adapter._json(resp, look).get("job_status") or {}
            log.debug("%s: %s %s/%s", look, job.get("status"), job.get("progress"),
                      job.get("total"))
        raise TransientHostError(f"{op}: job {job.get('id')} still {job.get('status')} after "
                                 f"{JOB_POLL_LOOKS} looks")

    # -- bodies -----------------------------------------------------------------------------
    def _ticket_body(self, item: ImportTicket) -> dict[str, Any]:
        now = self.now()
        ticket = item.ticket
        label = f"import {ticket.external_id or ticket.subject!r}"
        requester_id = self._author_id(ticket.requester_email, ticket.requester_name)
        first = self._comment_body(label, ticket.body_text, ticket.body_html, ticket.uploads,
                                   ticket.public, requester_id, item.created_at, now)
        comments = [first]
        for dated in item.comments:
            comment = dated.comment
            author = (self._author_id(comment.author_email, comment.author_name)
                      if comment.author_email else None)
            comments.append(self._comment_body(label, comment.body_text, comment.body_html,
                                               comment.uploads, comment.public, author,
                                               dated.created_at, now))
        tags = list(dict.fromkeys((*ticket.tags,
                                   *(t for d in item.comments for t in d.comment.add_tags))))
        vocabulary = self.adapter.vocabulary
        fields = dict(vocabulary.translate(ticket.defaults, ticket.controls).fields)
        for dated in item.comments:  # the latest status a reply set is the ticket's
            reply = vocabulary.translate(dated.comment.defaults, dated.comment.controls,
                                         follow_up=True).fields
            if "status" in reply:
                fields["status"] = reply["status"]
        if item.status:
            fields["status"] = item.status
        status = fields.get("status")
        body: dict[str, Any] = {
            "subject": ticket.subject,
            "requester_id": requester_id,
            "comments": comments,
            "created_at": zendesk_time(item.created_at, now),
            "updated_at": zendesk_time(item.updated_at, now),
        }
        body.update(fields)  # status, priority, type, group, brand, custom fields
        optional = {"recipient": ticket.recipient, "external_id": ticket.external_id}
        body.update({k: v for k, v in optional.items() if v is not None})
        if status in ("solved", "closed"):
            body["solved_at"] = body["updated_at"]
        if tags:
            body["tags"] = tags
        ccs, listed_only = bound_ccs(ticket.email_ccs, self.adapter.settings.max_ccs_per_mail)
        if ccs:
            body["email_ccs"] = [{"user_email": e, "action": "put"} for e in ccs]
        if listed_only:
            from connector.hosts.zendesk import _with_notes

            text, html_body = _with_notes(first.get("body", ""), first.get("html_body"),
                                          [cc_note(listed_only)])
            first.update({"html_body": html_body} if html_body is not None else {"body": text})
        return body

    def _comment_body(self, label: str, text: str, html: str | None, uploads: tuple[Any, ...],
                      public: bool, author_id: int | None, created_at: datetime,
                      now: datetime) -> dict[str, Any]:
        uploaded = self.adapter._upload_all(uploads, text, html, label)
        comment: dict[str, Any] = (
            {"html_body": uploaded.body_html} if uploaded.body_html is not None
            else {"body": uploaded.body_text})
        comment["public"] = public
        comment["created_at"] = zendesk_time(created_at, now)
        if author_id is not None:
            comment["author_id"] = author_id
        if uploaded.tokens:
            comment["uploads"] = list(uploaded.tokens)
        return comment

    def _author_id(self, email: str, name: str | None) -> int:
        """The Zendesk user for an address, created (without a verification mail) if new."""
        known = self.adapter._user_id(email)
        if known is not None:
            return known
        op = "create user for an imported mail"
        user = {"email": email, "name": (name or "").strip() or email.split("@")[0],
                "skip_verify_email": True}
        resp = self.adapter.request(
            "POST", "/api/v2/users/create_or_update", data=_json({"user": user}),
            headers={"Content-Type": "application/json"}, operation=op)
        found = self.adapter._json(resp, op).get("user") or {}
        if not isinstance(found.get("id"), int):
            raise TransientHostError(f"{op}: answer without a user id", status=resp.status_code)
        self.adapter._remember_user(email, found["id"])
        return int(found["id"])


def _json(payload: dict[str, Any]) -> bytes:
    from connector.hosts.zendesk import serialize_body

    return serialize_body(payload)


def _job_results(job: dict[str, Any], count: int, op: str) -> list[ImportResult]:
    """One result per ticket of the batch, from a finished job's ``results``; a ticket the
    results do not name (a failed job) has an error, and the caller looks it up before it
    gives up on it."""
    results: list[ImportResult | None] = [None] * count
    entries = job.get("results")
    if isinstance(entries, list):
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            index = entry.get("index", position)
            if not isinstance(index, int) or not 0 <= index < count:
                continue
            error = entry.get("error") or (entry.get("success") is False and "failed")
            if error:
                details = entry.get("details")
                results[index] = ImportResult(None, f"{error}: {details}" if details else
                                              str(error))
            elif isinstance(entry.get("id"), int):
                results[index] = ImportResult(str(entry["id"]))
    why = f"{op}: not in the job's results ({job.get('message') or job.get('status')})"
    return [r if r is not None else ImportResult(None, why) for r in results]
