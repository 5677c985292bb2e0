"""What the ``postmaster-bridge`` CLI calls for the outbound side, whatever the host
(``install``/``uninstall`` are each host's own: connector.outbound.factory picks them).

Each command takes the loaded ``Config`` and an output stream and returns an exit code
(connector/exitcodes.py). Configuration problems raise ``ConfigError`` (the CLI maps it to 78).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from connector.config import Config
from connector.errors import ConfigError
from connector.exitcodes import (
    EX_FAILURE,
    EX_NOINPUT,
    EX_OK,
    EX_OSERR,
    EX_SOFTWARE,
)
from connector.outbound.command_support import queue_of, sending_outbound
from connector.outbound.factory import outbound_api
from connector.outbound.queue import Job, JobState
from connector.outbound.service import OutboundService
from connector.outbound.settings import load_outbound
from connector.outbound.worker import OutboundWorker

log = logging.getLogger(__name__)


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
    worker = OutboundWorker(outbound, queue, outbound_api(config, outbound, adapter), store,
                            may_sweep=may_sweep)
    # The webhook serves the host's own requests (api.webhook(): Zendesk's signed trigger
    # deliveries or OTOBO's invoker).
    service = OutboundService(outbound, queue, worker, extra_routes=extra_routes)
    service.start()
    return service


def serve(config: Config, out: TextIO, *, stop: threading.Event | None = None,
          adapter: Any = None) -> int:
    """Run only the outbound side (webhook + worker + sweep) until SIGTERM/SIGINT or ``stop``."""
    from connector.service.leases import LeaseKeeper
    from connector.store.factory import open_store

    sending_outbound(config)
    store = open_store(config.store)
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: finishing the job in hand, then stopping", signum)
            stop.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    # Beside `run` instances on the same store, the sweep runs where its lease is (this
    # process works no account, so it does not count in their shares).
    keeper = LeaseKeeper(store, [], ttl=config.leases.ttl,
                         local_liveness=config.leases.local_liveness, sweep=True)
    keeper.tick()  # before the worker's first sweep
    try:
        service = start_outbound(config, store=store, adapter=adapter,
                                 may_sweep=keeper.holds_sweep)
    except OSError as exc:  # the port is taken, the address is not ours
        store.close()
        print(f"cannot listen: {exc}", file=out)
        return EX_OSERR
    assert service is not None
    print(f"serving webhooks on {service.url} (public URL "
          f"{service.config.service.public_url if service.config.service else '?'})", file=out)
    try:
        while not stop.wait(min(0.5, keeper.tick_every)):
            keeper.tick()
            if not service.alive():
                log.error("outbound service thread ended; stopping")
                return EX_SOFTWARE
        return EX_OK
    finally:
        keeper.release_all()
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
    with queue_of(config) as queue:
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
    with queue_of(config) as queue:
        job = queue.job(job_id)
    if job is None:
        print(f"no outbound job {job_id}", file=out)
        return EX_NOINPUT
    for line in _show_lines(job):
        print(line, file=out)
    return EX_OK


def outbound_retry(config: Config, job_id: int, out: TextIO) -> int:
    """Queue a failed, uncertain or skipped job again (sent by the running service)."""
    with queue_of(config) as queue:
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
