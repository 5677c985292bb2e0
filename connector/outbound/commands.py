"""What the ``postmaster-bridge`` CLI calls for the outbound side.

Each command takes the loaded ``Config`` and an output stream and returns an exit code
(connector/exitcodes.py). Configuration problems raise ``ConfigError`` (the CLI maps it to 78).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from connector.config import Config
from connector.errors import ConfigError, HostError, TransientHostError
from connector.exitcodes import (
    EX_FAILURE,
    EX_NOINPUT,
    EX_OK,
    EX_OSERR,
    EX_SOFTWARE,
    EX_UNAVAILABLE,
)
from connector.outbound.queue import Job, JobState, OutboundQueue
from connector.outbound.service import OutboundService
from connector.outbound.settings import OutboundConfig, load_outbound
from connector.outbound.worker import OutboundWorker
from connector.outbound.zendesk_api import ZendeskOutboundAPI
from connector.outbound.zendesk_install import apply, plan_install, plan_uninstall

log = logging.getLogger(__name__)



def _outbound(config: Config) -> OutboundConfig:
    outbound = load_outbound(config)
    if not outbound.enabled_accounts:
        raise ConfigError("no account has outbound enabled (accounts[].outbound)",
                          path=str(config.path), key="accounts")
    if outbound.service is None:
        raise ConfigError("is required for outbound", path=str(config.path), key="service")
    return outbound


def _otobo_api(config: Config, outbound: OutboundConfig, adapter: Any = None) -> Any:
    """The worker's OTOBO/Znuny view: the agent's PECReply field stands for the reply tag."""
    from connector.hosts.otobo import OtoboAdapter, OtoboSettings
    from connector.outbound.otobo_api import OtoboOutboundAPI

    if adapter is None:
        adapter = OtoboAdapter(OtoboSettings.from_host_config(config.host))
    return OtoboOutboundAPI(adapter, {a.reply_tag: a.account for a in outbound.enabled_accounts})


def _api(config: Config, adapter: Any = None) -> ZendeskOutboundAPI:
    if adapter is None:
        if config.host.type != "zendesk":
            raise ConfigError("outbound replies need host.type: zendesk", path=str(config.path),
                              key="host.type")
        from connector.hosts.zendesk import ZendeskAdapter, ZendeskSettings

        adapter = ZendeskAdapter(ZendeskSettings.from_host_config(config.host))
    return ZendeskOutboundAPI(adapter)


@contextmanager
def _queue(config: Config) -> Iterator[OutboundQueue]:
    from connector.store.factory import open_queue

    queue = open_queue(config.store)
    try:
        yield queue
    finally:
        queue.close()


@contextmanager
def _queue_if_present(config: Config) -> Iterator[OutboundQueue | None]:
    """The queue for a dry run: None when no store file exists yet (a dry run creates none)."""
    from connector.store.factory import store_exists

    if not store_exists(config.store):
        yield None
        return
    with _queue(config) as queue:
        yield queue


# -- install / uninstall ------------------------------------------------------------------------

def _host_failure(exc: HostError) -> int:
    """69 when the helpdesk could not be reached (worth running again), 1 when it refused."""
    return EX_UNAVAILABLE if isinstance(exc, TransientHostError) else EX_FAILURE


def install(config: Config, dry_run: bool, suppress: bool, out: TextIO, *,
            adapter: Any = None) -> int:
    """Create or update the webhook, trigger category, triggers and macros (idempotent)."""
    outbound = _outbound(config)
    api = _api(config, adapter)
    with (_queue_if_present(config) if dry_run else _queue(config)) as queue:
        try:
            plan = plan_install(api, outbound, queue, suppress=suppress)
            if dry_run or plan.empty:
                for line in plan.describe():
                    print(line, file=out)
                if plan.empty:
                    print("nothing to change", file=out)
                elif dry_run:
                    print(f"dry run: {len(plan.changes)} change(s) not made", file=out)
                return EX_OK
            for line in [f"ok       {u}" for u in plan.unchanged]:
                print(line, file=out)
            assert queue is not None
            apply(plan, api, queue, outbound, out)
            for warning in plan.warnings:
                print(f"warning  {warning}", file=out)
        except HostError as exc:
            print(f"install failed: {exc}", file=out)
            return _host_failure(exc)
    print(f"installed: {len(plan.changes)} change(s)", file=out)
    return EX_OK


def uninstall(config: Config, dry_run: bool, out: TextIO, *, adapter: Any = None) -> int:
    """Remove exactly what install created (and undo the conditions it added)."""
    outbound = load_outbound(config)
    api = _api(config, adapter)
    with (_queue_if_present(config) if dry_run else _queue(config)) as queue:
        try:
            plan = plan_uninstall(api, outbound, queue)
            if dry_run or plan.empty:
                for line in plan.describe():
                    print(line, file=out)
                print("nothing to remove" if plan.empty else
                      f"dry run: {len(plan.changes)} change(s) not made", file=out)
                return EX_OK
            assert queue is not None
            apply(plan, api, queue, outbound, out)
            for warning in plan.warnings:
                print(f"warning  {warning}", file=out)
        except HostError as exc:
            print(f"uninstall failed: {exc}", file=out)
            return _host_failure(exc)
    print(f"uninstalled: {len(plan.changes)} change(s)", file=out)
    return EX_OK


# -- serving -------------------------------------------------------------------------------------

def start_outbound(config: Config, *, store: Any = None, adapter: Any = None,
                   extra_routes: Mapping[str, Any] | None = None,
                   may_sweep: Callable[[], bool] | None = None) -> OutboundService | None:
    """Start the webhook server and worker when an account has outbound enabled, else None.

    ``store`` is the running store (Message-IDs are recorded through it); without one the
    configured store is opened. ``may_sweep``: whether this instance runs the sweep now (it
    holds the sweep's lease); without it, always. Stop the result with ``stop()``.
    """
    outbound = load_outbound(config)
    if not outbound.enabled_accounts:
        return None
    if outbound.service is None:
        raise ConfigError("is required for outbound", path=str(config.path), key="service")
    from connector.store.factory import open_queue, open_store

    if store is None:
        store = open_store(config.store)
    queue = open_queue(config.store)
    api = _otobo_api(config, outbound, adapter) if config.host.type == "otobo" \
        else _api(config, adapter)
    worker = OutboundWorker(outbound, queue, api, store, may_sweep=may_sweep)
    # The webhook serves the host's own requests (api.webhook(): Zendesk's signed trigger
    # deliveries or OTOBO's invoker).
    service = OutboundService(outbound, queue, worker, extra_routes=extra_routes)
    service.start()
    return service


def serve(config: Config, out: TextIO, *, stop: threading.Event | None = None,
          adapter: Any = None) -> int:
    """Run only the outbound side (webhook + worker + sweep) until SIGTERM/SIGINT or ``stop``."""
    from connector.store.factory import open_store

    _outbound(config)
    store = open_store(config.store)
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: finishing the job in hand, then stopping", signum)
            stop.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        service = start_outbound(config, store=store, adapter=adapter)
    except OSError as exc:  # the port is taken, the address is not ours
        store.close()
        print(f"cannot listen: {exc}", file=out)
        return EX_OSERR
    assert service is not None
    print(f"serving webhooks on {service.url} (public URL "
          f"{service.config.service.public_url if service.config.service else '?'})", file=out)
    try:
        while not stop.wait(0.5):
            if not service.alive():
                log.error("outbound service thread ended; stopping")
                return EX_SOFTWARE
        return EX_OK
    finally:
        service.stop()
        service.queue.close()
        store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- operations ---------------------------------------------------------------------------------

def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


#: The keys of each job in ``outbound list --json``.
JOB_KEYS = ("id", "state", "account", "ticket_id", "source", "attempts", "recipient", "subject",
            "message_id", "comment_id", "smtp_reply", "error", "reported", "report_error",
            "created_at", "updated_at", "sent_at")


def outbound_list(config: Config, out: TextIO, *, state: str | None = None,
                  account: str | None = None, limit: int = 50, as_json: bool = False) -> int:
    """One line per job, newest first; or one JSON document (``{"jobs": [...], "counts":
    {state: n}}``)."""
    if state is not None and state not in {s.value for s in JobState}:
        raise ConfigError(f"unknown state {state!r}; one of "
                          f"{', '.join(s.value for s in JobState)}")
    with _queue(config) as queue:
        jobs = queue.jobs(state=state, account=account, limit=limit)
        counts = queue.counts()
    if as_json:
        rows = [{key: getattr(job, key) for key in JOB_KEYS} for job in jobs]
        for row in rows:
            row["state"] = row["state"].value
        out.write(json.dumps({"jobs": rows, "counts": dict(sorted(counts.items()))},
                             indent=2, ensure_ascii=False) + "\n")
        return EX_OK
    print(f"{'id':>6}  {'state':<9} {'account':<14} {'ticket':>8} {'try':>3}  "
          f"{'recipient':<28} {'updated':<25} error", file=out)
    for job in jobs:
        print(f"{job.id:>6}  {job.state.value:<9} {_short(job.account, 14):<14} "
              f"{job.ticket_id:>8} {job.attempts:>3}  {_short(job.recipient, 28):<28} "
              f"{job.updated_at:<25} {_short(job.error, 60)}", file=out)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"
    print(f"({summary})", file=out)
    return EX_OK


def _show_lines(job: Job) -> list[str]:
    fields: list[tuple[str, Any]] = [
        ("job", job.id), ("state", job.state.value), ("account", job.account),
        ("ticket", job.ticket_id), ("source", job.source), ("attempts", job.attempts),
        ("next attempt", job.next_attempt_at if job.state == JobState.QUEUED else None),
        ("comment", job.comment_id), ("recipient", job.recipient), ("subject", job.subject),
        ("message-id", f"<{job.message_id}>" if job.message_id else None),
        ("provider answer", job.smtp_reply), ("error", job.error),
        ("reported on ticket", "yes" if job.reported else "no"),
        ("report error", job.report_error), ("created", job.created_at),
        ("updated", job.updated_at), ("sent", job.sent_at),
    ]
    lines = [f"{name + ':':<20}{value}" for name, value in fields if value not in (None, "")]
    if job.payload:
        for key, value in job.payload.items():
            if value not in (None, ""):
                lines.append(f"{'request ' + key + ':':<20}{_short(str(value), 200)}")
    return lines


def outbound_show(config: Config, job_id: int, out: TextIO) -> int:
    with _queue(config) as queue:
        job = queue.job(job_id)
    if job is None:
        print(f"no outbound job {job_id}", file=out)
        return EX_NOINPUT
    for line in _show_lines(job):
        print(line, file=out)
    return EX_OK


def outbound_retry(config: Config, job_id: int, out: TextIO) -> int:
    """Queue a failed, uncertain or skipped job again (sent by the running service)."""
    with _queue(config) as queue:
        try:
            job = queue.requeue(job_id)
        except LookupError as exc:
            print(str(exc), file=out)
            return EX_NOINPUT
        except ValueError as exc:
            print(f"not retried: {exc}", file=out)
            return EX_FAILURE
    kept = f", keeping Message-ID <{job.message_id}>" if job.message_id else ""
    print(f"job {job.id} queued again{kept}; the running service sends it (postmaster-bridge "
          "serve or run)", file=out)
    return EX_OK
