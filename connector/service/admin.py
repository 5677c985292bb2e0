"""What the admin commands show and do: account state, the communication log, quarantine.

Kept apart from the CLI so each piece is a function over the store that tests can call.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from connector.config import AccountConfig, Config
from connector.errors import FetchError, NotFoundError, UsageError
from connector.fetch.base import Mailbox
from connector.service.connections import connection_report
from connector.service.pipeline import Outcome, Pipeline, outcome_of
from connector.store.base import Dismissal, Lease, MessageRecord, MessageState, Store

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> datetime:
    """``2h``, ``30m``, ``7d`` or an ISO timestamp, as an aware datetime."""
    match = _SINCE.match(text)
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match.group(1)) *
                                             _UNITS[match.group(2)])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since must look like 2h, 30m, 7d or an ISO time, not {text!r}")\
            from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# -- accounts -----------------------------------------------------------------------------
def _auth(account: AccountConfig) -> str:
    """How the account logs in; for a delegated OAuth2 grant, whether someone signed in."""
    oauth2 = account.oauth2
    if oauth2 is None:
        return "password"
    text = f"oauth2: {oauth2.provider} {oauth2.flow}"
    if oauth2.delegated:
        signed_in = bool(oauth2.refresh_token) or bool(
            oauth2.token_file is not None and oauth2.token_file.exists())
        text += ("; signed in" if signed_in else
                 f"; nobody signed in yet: 'postmaster-bridge accounts authorize {account.name}'")
    return text



def accounts_report(config: Config, store: Store, out: TextIO, *, as_json: bool) -> None:
    figures = store.account_figures()
    connections = connection_report(store, [a.name for a in config.accounts])
    leases = {lease.resource: lease for lease in store.leases()}
    rows = []
    for account in config.accounts:
        health = store.get_health(account.name)
        fig = figures.get(account.name, {})
        state = "enabled" if account.enabled and health.enabled else "disabled"
        if not account.enabled:
            state = "disabled (config)"
        rows.append({
            "account": account.name, "state": state,
            "last_success": health.last_success_at.isoformat() if health.last_success_at
            else None,
            "last_error": health.last_error,
            "consecutive_failures": health.consecutive_failures,
            "disabled_reason": health.disabled_reason,
            "backlog": fig.get("pending", 0),
            "processed": fig.get("processed", 0), "failed": fig.get("failed", 0),
            "ignored": fig.get("ignored", 0), "held": fig.get("held", 0),
            "avg_seconds": fig.get("avg_seconds"),
            "auth": _auth(account),
            **connections[account.name],
            **_lease_fields(leases.get(f"account:{account.name}")),
        })
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    for row in rows:
        out.write(f"{row['account']}: {row['state']}; last success "
                  f"{row['last_success'] or 'never'}; failures in a row "
                  f"{row['consecutive_failures']}; backlog {row['backlog']}; processed "
                  f"{row['processed']}, failed {row['failed']}, ignored {row['ignored']}, "
                  f"held {row['held']}"
                  + (f"; avg {row['avg_seconds']} s" if row["avg_seconds"] is not None else "")
                  + "\n")
        if row["auth"] != "password":
            out.write(f"    {row['auth']}\n")
        if row["last_error"]:
            out.write(f"    last error: {row['last_error']}\n")
        if row["disabled_reason"]:
            out.write(f"    {row['disabled_reason']}; re-enable with "
                      f"'postmaster-bridge accounts enable {row['account']}'\n")
        connection = _connection_line(row)
        if connection:
            out.write(f"    connection: {connection}\n")
        if row["holder"] is not None:
            out.write(f"    worked by {row['holder']} (lease epoch {row['lease_epoch']}, "
                      f"{row['lease_expires_in']:.0f} s left)\n")
    instances = store.instances()
    if instances:
        out.write("instances:\n")
        held = Counter(lease.holder for lease in leases.values()
                       if lease.live and lease.resource.startswith("account:"))
        sweep = leases.get("sweep")
        for instance in instances:
            state = "live" if instance.live else "gone"
            extra = "; runs the sweep" if sweep is not None and sweep.live and \
                sweep.holder == instance.instance else ""
            where = f" ({instance.url})" if instance.url else ""
            out.write(f"    {instance.instance}{where}: {state}, {held[instance.instance]} "
                      f"account(s), last heartbeat {_when(instance.heartbeat_at)}{extra}\n")


def _lease_fields(lease: Lease | None) -> dict[str, Any]:
    """Who works the account now (several instances on one ledger): its live lease."""
    live = lease is not None and lease.live
    return {"holder": lease.holder if live and lease else None,
            "lease_epoch": lease.epoch if live and lease else None,
            "lease_expires_in": round(lease.expires_in, 1) if live and lease else None}


def _connection_line(row: dict[str, Any]) -> str:
    """State, last server event and reconnections, or "" when no service ever ran it."""
    parts = []
    if row["connection"] != "not running":
        detail = f" ({row['connection_detail']})" if row["connection_detail"] else ""
        since = _when(datetime.fromisoformat(row["connection_since"]))
        parts.append(f"{row['connection']}{detail} since {since}")
    elif row["last_server_event"] or row["reconnects_last_hour"]:
        parts.append("not running")
    if row["last_server_event"]:
        at = row["last_server_event_at"]
        when = _when(datetime.fromisoformat(at)) if at else "-"
        parts.append(f"last server event {when}: {row['last_server_event']}")
    if parts:
        parts.append(f"reconnects in the last hour: {row['reconnects_last_hour']}")
    return "; ".join(parts)


# -- log ----------------------------------------------------------------------------------
def print_log(store: Store, out: TextIO, *, account: str | None, level: str | None,
              since: str | None, message: str | None, as_json: bool, limit: int) -> None:
    entries = store.log_entries(account=account, min_level=level,
                                since=parse_since(since) if since else None, message=message,
                                limit=limit)
    for entry in entries:
        if as_json:
            out.write(json.dumps(entry.as_dict(), ensure_ascii=False) + "\n")
            continue
        ident = f" {entry.ref}" if entry.ref else ""
        ident += f" <{entry.message_id}>" if entry.message_id else ""
        took = f" ({entry.duration_ms:.0f} ms)" if entry.duration_ms is not None else ""
        detail = f": {entry.detail}" if entry.detail else ""
        out.write(f"{_when(entry.ts)} {entry.level.upper():7} {entry.kind:10} "
                  f"{entry.account or '-'}{ident} {entry.event}{detail}{took}\n")


# -- messages and quarantine --------------------------------------------------------------
def _failed(store: Store, record_id: int) -> MessageRecord:
    record = store.get_message_by_id(record_id)
    if record is None or record.state != MessageState.FAILED:
        raise NotFoundError(f"no failed message with id {record_id} (see 'errors list')")
    return record


def _dismissal_json(dismissal: Dismissal | None) -> dict[str, Any] | None:
    if dismissal is None:
        return None
    return {"reason": dismissal.reason, "at": dismissal.dismissed_at.isoformat()}


def errors_list(store: Store, out: TextIO, *, account: str | None, as_json: bool,
                include_dismissed: bool = False) -> None:
    records = store.failed_messages(account, include_dismissed=include_dismissed)
    dismissed = store.dismissals(r.id for r in records)
    if as_json:
        out.write(json.dumps([{
            "id": r.id, "account": r.account, "ref": r.ref, "message_id": r.message_id,
            "sender": r.sender, "subject": r.subject, "error": r.error,
            "attempts": r.attempts, "failed_at": r.updated_at.isoformat(),
            "raw_kept": store.quarantined_raw(r.id) is not None,
            "dismissed": _dismissal_json(dismissed.get(r.id))} for r in records],
            indent=2, ensure_ascii=False) + "\n")
        return
    if not records:
        out.write("no failed messages\n")
    for r in records:
        gone = dismissed.get(r.id)
        out.write(f"{r.id:6} {_when(r.updated_at)} {r.account} {r.sender or '-'} "
                  f"{(r.subject or '')[:50]!r} attempts={r.attempts}"
                  + (f" DISMISSED {_when(gone.dismissed_at)}: {gone.reason}" if gone else "")
                  + f"\n       {r.error}\n")


def errors_dismiss(store: Store, out: TextIO, record_id: int, reason: str) -> None:
    """A failure the admin handled by hand leaves ``errors list`` (``--all`` still shows it);
    its raw copy stays for ``errors export``, and ``errors replay`` lifts the dismissal."""
    record = _failed(store, record_id)
    if not reason.strip():
        raise UsageError("--reason must say why (it is kept with the message)")
    store.dismiss_message(record.id, reason.strip())
    store.log_event(level="notice", kind="message", account=record.account,
                    event="dismissed", detail=f"by the admin: {reason.strip()}", ref=record.ref,
                    message_id=record.message_id)
    out.write(f"{record.id}: dismissed ({reason.strip()})\n")


def find_records(store: Store, key: str) -> list[MessageRecord]:
    """The ledger records ``key`` names: a record id, a Message-ID (with or without <>) or a
    ref; NotFoundError when there is none."""
    records: list[MessageRecord] = []
    if key.strip().isdigit():
        record = store.get_message_by_id(int(key))
        records = [record] if record is not None else []
    records = records or store.find_messages(key)
    if not records:
        raise NotFoundError(f"no message with id, Message-ID or ref {key!r} in the ledger")
    return records


def message_document(store: Store, record: MessageRecord) -> dict[str, Any]:
    """Everything the ledger and the communication log know about one message (the
    ``messages show --json`` document; the text form prints the same)."""
    raw = store.quarantined_raw(record.id)
    entries = store.log_entries(account=record.account, message=record.ref, limit=10000)
    entries = [e for e in entries if e.ref == record.ref]
    headers = _headers(raw) if raw is not None and record.sender is None else None
    dismissal = store.dismissals([record.id]).get(record.id)
    return {
        "id": record.id, "account": record.account, "ref": record.ref,
        "state": record.state.value,
        "outcome": outcome_of(record).value if record.state.terminal else None,
        "action": record.action, "ticket_id": record.ticket_id,
        "message_id": record.message_id, "sender": record.sender, "subject": record.subject,
        "headers": headers,
        "received_at": record.created_at.isoformat(), "updated_at": record.updated_at.isoformat(),
        "attempts": record.attempts, "error": record.error,
        "dismissed": _dismissal_json(dismissal),
        "raw_kept_bytes": len(raw) if raw is not None else None,
        "host_calls": [{"ts": e.ts.isoformat(), "call": e.event, "answer": e.detail,
                        "duration_ms": e.duration_ms} for e in entries if e.kind == "host"],
        "log": [e.as_dict() for e in entries if e.kind != "host"],
        "trace": record.trace,
    }


def _headers(raw: bytes) -> dict[str, str | None]:
    """From, Subject and Message-ID as the mail wrote them, for a message that failed before
    the bridge could read a sender (an unusable From is the usual reason)."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)

    def header(name: str) -> str | None:
        value = parsed.get(name)
        return " ".join(str(value).split()) if value is not None else None

    return {"from": header("From"), "subject": header("Subject"),
            "message_id": header("Message-ID"), "date": header("Date")}


def messages_show(store: Store, out: TextIO, key: str, *, as_json: bool) -> None:
    documents = [message_document(store, r) for r in find_records(store, key)]
    if as_json:
        out.write(json.dumps({"messages": documents}, indent=2, ensure_ascii=False) + "\n")
        return
    for i, doc in enumerate(documents):
        if i:
            out.write("\n")
        _show_text(doc, out)


def _show_text(doc: dict[str, Any], out: TextIO) -> None:
    from connector.filters.report import render_text

    headers = doc["headers"] or {}
    sender = doc["sender"] or (f"(no usable address) From: {headers['from']}"
                               if headers.get("from") else "(unknown)")
    subject = doc["subject"] if doc["subject"] is not None else headers.get("subject")
    outcome = doc["outcome"] or f"not finished ({doc['state']})"
    fields = [
        ("id", doc["id"]), ("account", doc["account"]), ("ref", doc["ref"]),
        ("message-id", doc["message_id"] or headers.get("message_id")),
        ("from", sender), ("subject", subject), ("outcome", outcome),
        ("ticket", f"#{doc['ticket_id']}" if doc["ticket_id"] is not None else None),
        ("received", doc["received_at"]), ("updated", doc["updated_at"]),
        ("attempts", doc["attempts"]), ("reason", doc["error"]),
        ("dismissed", f"{doc['dismissed']['at']}: {doc['dismissed']['reason']}"
         if doc["dismissed"] else None),
        ("raw message kept", f"yes, {doc['raw_kept_bytes']} bytes" if doc["raw_kept_bytes"]
         is not None else ("no" if doc["state"] == "failed" else None)),
    ]
    for name, value in fields:
        if value is not None:
            out.write(f"{name}: {value}\n")
    out.write(f"helpdesk calls: {len(doc['host_calls']) or 'none logged'}\n")
    for call in doc["host_calls"]:
        took = f" ({call['duration_ms']:.0f} ms)" if call["duration_ms"] is not None else ""
        out.write(f"  {call['ts'][:19]} {call['call']} -> {call['answer']}{took}\n")
    out.write("log:\n" if doc["log"] else "log: nothing kept (older than the retention?)\n")
    for entry in doc["log"]:
        out.write(f"  {entry['ts'][:19]} {entry['level'].upper():7} {entry['event']}"
                  + (f": {entry['detail']}" if entry["detail"] else "") + "\n")
    if doc["trace"]:
        out.write("trace:\n" + "".join(f"  {line}\n" for line in
                                        render_text(doc["trace"]).splitlines()))
    else:
        out.write("trace: none, the mail failed before the filters ran"
                  + (f" ({doc['error']})" if doc["error"] else "") + "\n")


def errors_export(store: Store, record_id: int, target: Path) -> Path:
    _failed(store, record_id)
    raw = store.quarantined_raw(record_id)
    if raw is None:
        raise NotFoundError(f"message {record_id} was never downloaded (too large?) or its copy "
                          "is gone; it is still in the account's error folder on the server")
    path = target / f"failed-{record_id}.eml" if target.is_dir() else target
    path.write_bytes(raw)
    return path


def errors_replay(store: Store, record_id: int, account: AccountConfig,
                  pipeline: Pipeline, mailbox_factory: Callable[[AccountConfig], Mailbox],
                  out: TextIO) -> Outcome:
    """Run a failed message through the pipeline again. On success the server copy moves
    from the error folder to the processed folder; on failure nothing changes there."""
    record = _failed(store, record_id)
    raw = store.quarantined_raw(record_id)
    if raw is None:
        raise NotFoundError(f"message {record_id} has no stored copy to replay")
    store.reopen_message(record_id)
    result = pipeline.process(record.ref, raw, len(raw))
    if result.outcome in (Outcome.FAILED, Outcome.RETRY):
        if result.outcome == Outcome.RETRY:
            store.finish_message(record_id, MessageState.FAILED,
                                 error=f"replay: {result.reason}")
        out.write(f"{record_id}: still {result.outcome.value}: {result.reason}\n")
        return result.outcome
    store.release_quarantine(record_id)
    out.write(f"{record_id}: {result.outcome.value}"
              + (f" (ticket #{result.ticket_id})" if result.ticket_id else "") + "\n")
    _move_server_copy(record_id, account, account.error_folder, mailbox_factory, raw, out)
    return result.outcome


def _move_server_copy(record_id: int, account: AccountConfig, folder: str,
                      mailbox_factory: Callable[[AccountConfig], Mailbox], raw: bytes,
                      out: TextIO) -> None:
    """IMAP and Graph: the server copy of a replayed or released mail leaves ``folder`` for
    the processed folder. POP3 kept it where it was."""
    if account.protocol not in ("imap", "graph"):
        return
    try:
        moved = _move_out_of(account, folder, mailbox_factory, raw)
        out.write(f"{record_id}: moved from {folder} to {account.processed_folder}\n" if moved
                  else f"{record_id}: not found in {folder}; nothing moved\n")
    except FetchError as exc:
        out.write(f"{record_id}: recorded, but the server copy could not be moved: {exc}\n")


def _move_out_of(account: AccountConfig, folder: str,
                 mailbox_factory: Callable[[AccountConfig], Mailbox], raw: bytes) -> bool:
    # A mailbox on that folder: its "processed" action moves mail to processed.
    settings = replace(account, folder=folder)
    with mailbox_factory(settings) as mailbox:
        for fetched in mailbox.fetch(mailbox.list_new(set())):
            if fetched.raw == raw:
                mailbox.mark_processed(fetched)
                return True
    return False


# -- held mail (over the per-sender cap) -------------------------------------------------------
def held_list(store: Store, out: TextIO, *, account: str | None, as_json: bool) -> None:
    records = store.messages_in(MessageState.HELD, account)
    if as_json:
        out.write(json.dumps([{
            "id": r.id, "account": r.account, "ref": r.ref, "message_id": r.message_id,
            "sender": r.sender, "subject": r.subject, "reason": r.error,
            "held_at": r.updated_at.isoformat()} for r in records], indent=2) + "\n")
        return
    if not records:
        out.write("no held messages\n")
    for r in records:
        out.write(f"{r.id:6} {_when(r.updated_at)} {r.account} {r.sender or '-'} "
                  f"{(r.subject or '')[:50]!r}\n       {r.error}\n")


def held_release(store: Store, record_id: int, account: AccountConfig, pipeline: Pipeline,
                 mailbox_factory: Callable[[AccountConfig], Mailbox], out: TextIO) -> Outcome:
    """Run a held message through the pipeline again with the per-sender cap lifted (the
    same path as any mail: it may still be ignored, noted or fail). Once it is recorded, the
    server copy moves from the held folder to the processed folder."""
    record = store.get_message_by_id(record_id)
    if record is None or record.state != MessageState.HELD:
        raise NotFoundError(f"no held message with id {record_id} (see 'held list')")
    raw = store.quarantined_raw(record_id)
    if raw is None:
        raise NotFoundError(f"message {record_id} has no stored copy to release")
    store.reopen_message(record_id)
    result = pipeline.process(record.ref, raw, len(raw), release_held=True)
    if result.outcome == Outcome.RETRY:
        # Back to held: the admin releases it again once the helpdesk answers.
        store.finish_message(record_id, MessageState.HELD, error=f"release: {result.reason}")
        out.write(f"{record_id}: still held: {result.reason}\n")
        return result.outcome
    out.write(f"{record_id}: {result.outcome.value}"
              + (f" (ticket #{result.ticket_id})" if result.ticket_id else "")
              + (f": {result.reason}" if result.reason else "") + "\n")
    if result.outcome == Outcome.FAILED:
        return result.outcome  # its copy stays for `errors replay`
    store.release_quarantine(record_id)
    if not record.ref.startswith(("file:", "stdin:")):  # import and deliver left no copy
        _move_server_copy(record_id, account, account.held_folder, mailbox_factory, raw, out)
    return result.outcome


def json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)
