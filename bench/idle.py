"""Latency from APPEND to the host's ticket create, with IMAP IDLE (``bench/run.py idle-latency``).

The bridge runs as the real command (``postmaster-bridge run``) in its own process with a long
poll interval (30 minutes), so a new mail can only be picked up quickly if the runner waits in
IDLE. The benchmark APPENDs small new requests one at a time over one open IMAP connection,
``--gap`` seconds apart, and the host double notes when each ticket create arrives
(``time.monotonic()``: one clock for every process on Linux). Latency = create arrival minus
the moment just before the APPEND command was sent.

Before the bridge starts, the server's own share is measured alone: APPEND to a spare folder
while a client waits in IDLE on it, and time until the EXISTS push (Dovecot holds change
notifications back for about half a second on purpose, so this is most of the total). Measured
with the bridge running, such an observer would be misleading: the bridge's own MOVEs wake it.

Assumed API (the only one): ``postmaster-bridge run`` uses IDLE on its own when the server
advertises it. If the runner needs a switch, pass it with ``--account-extra 'idle: true'``
(YAML lines added to the account). If the first mail makes no ticket within ``--timeout``
seconds, IDLE is not in the runner (yet): the result says ``pending`` and nothing is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

POLL_MINUTES = 30.0


def stop_bridge(bridge: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, as a supervisor stops it; killed if it has not exited after ``timeout``."""
    if bridge.poll() is not None:
        return
    bridge.send_signal(signal.SIGTERM)
    try:
        bridge.wait(timeout)
    except subprocess.TimeoutExpired:
        bridge.kill()
        bridge.wait(5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def creates_by_token(host: Any) -> dict[str, float]:
    """token -> arrival of the create whose subject carries it (``... (ref TOKEN)``)."""
    found: dict[str, float] = {}
    for arrived, subject in host.stats()["creates"]:
        if "(ref " in subject:
            found[subject.rsplit("(ref ", 1)[1].rstrip(")")] = arrived
    return found


def _creates(env: Any) -> dict[str, float]:
    return creates_by_token(env.host)


def _wait_for(env: Any, token: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = _creates(env).get(token)
        if arrived is not None:
            return arrived
        time.sleep(0.02)
    return None


class IdleObserver(threading.Thread):
    """A client in IDLE that notes when the server pushes each new mail (EXISTS)."""

    def __init__(self, env: Any, folder: str) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.folder = folder
        self.announced: list[float] = []
        self.stopped = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError), self.env.imap() as client:
            client.select_folder(self.folder, readonly=True)
            while not self.stopped.is_set():
                client.idle()
                self.ready.set()
                responses = client.idle_check(timeout=5.0)
                now = time.monotonic()
                client.idle_done()
                # Only a push counts; EXISTS answered to our own DONE (a slice ending in the
                # server's notification delay) would make the server look faster than it is.
                if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    self.announced.append(now)

    def first_after(self, moment: float) -> float | None:
        return next((t for t in self.announced if t >= moment), None)


def _server_push_latency(env: Any, mails: list[Any], gap: float) -> dict[str, float]:
    """APPEND -> EXISTS pushed to an idle client, with nothing else touching the folder: the
    server's share of the latency (Dovecot delays change notifications on purpose)."""
    import random

    folder = "IdleProbe"
    with env.imap() as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
    observer = IdleObserver(env, folder)
    observer.start()
    observer.ready.wait(10)
    time.sleep(0.5)
    jitter = random.Random(7)
    sent: list[float] = []
    with env.imap() as client:
        for mail in mails:
            sent.append(time.monotonic())
            client.append(folder, mail.raw)
            time.sleep(gap * jitter.uniform(0.8, 1.2))
    observer.stopped.set()
    pushes = [a - t for t in sent if (a := observer.first_after(t)) is not None]
    if not pushes:
        return {}
    return {"p50_ms": round(1000 * statistics.median(pushes), 1),
            "p95_ms": round(1000 * percentile(pushes, 0.95), 1)}


def run_idle_latency(args: argparse.Namespace) -> int:
    import corpus
    from harness import REPO, BenchEnv

    small = [m for m in corpus.generate(max(args.messages * 3, 50), 1.0, args.seed)
             if m.kind in ("plain", "html")][: args.messages]
    with BenchEnv(Path(args.workdir) if args.workdir else None) as env:
        config = env.write_config(poll_interval=POLL_MINUTES, account_extra=args.account_extra,
                                  name="idle")
        server_push = _server_push_latency(env, small[: min(10, len(small))], args.gap)
        log = env.workdir / "bridge-idle.log"
        environment = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(log, "wb") as out:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(config),
                 *(["-v"] if args.bridge_verbose else []), "run"],
                stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=REPO)
        result: dict[str, Any] = {"messages": len(small), "gap_s": args.gap,
                                  "poll_interval_min": POLL_MINUTES,
                                  "account_extra": args.account_extra}
        try:
            deadline = time.monotonic() + 20
            while "Processed" not in env.folder_counts():  # the first pass has run
                if bridge.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bridge did not start; see {log}:\n"
                                       + log.read_text(errors="replace")[-2000:])
                time.sleep(0.1)
            time.sleep(1.0)  # into IDLE
            sent_at: dict[str, float] = {}
            appends: list[float] = []
            with env.imap() as client:
                for number, mail in enumerate(small):
                    sent = sent_at[mail.token] = time.monotonic()
                    client.append("INBOX", mail.raw)
                    appends.append(time.monotonic() - sent)
                    if number == 0 and _wait_for(env, mail.token, args.timeout) is None:
                        result["status"] = "pending"
                        result["detail"] = (
                            f"no ticket within {args.timeout:.0f}s of the APPEND with "
                            f"poll_interval {POLL_MINUTES:.0f} min: the runner does not wait "
                            "in IDLE (yet)")
                        break
                    time.sleep(args.gap)
            if result.get("status") != "pending":
                _wait_for(env, small[-1].token, args.timeout)
                creates = _creates(env)
                latencies = [creates[t] - sent for t, sent in sent_at.items() if t in creates]
                result.update({
                    "status": "measured", "created": len(latencies),
                    "missing": len(sent_at) - len(latencies),
                    "p50_ms": round(1000 * statistics.median(latencies), 1),
                    "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
                    "max_ms": round(1000 * max(latencies), 1),
                    "min_ms": round(1000 * min(latencies), 1),
                    "append_p50_ms": round(1000 * statistics.median(appends), 1),
                    "server_push_p50_ms": server_push.get("p50_ms"),
                    "server_push_p95_ms": server_push.get("p95_ms")})
        finally:
            stop_bridge(bridge, 20)
        if result["status"] == "pending":
            print(f"idle-latency: PENDING: {result['detail']}")
        else:
            print(f"idle-latency: {result['created']}/{result['messages']} mails, one every "
                  f"{args.gap}s: APPEND -> ticket create p50 {result['p50_ms']} ms, p95 "
                  f"{result['p95_ms']} ms (min {result['min_ms']}, max {result['max_ms']}; "
                  f"APPEND itself p50 {result['append_p50_ms']} ms)")
            print(f"  the server's part, measured alone before (APPEND -> EXISTS pushed to an "
                  f"idle client, nothing else running): p50 {result['server_push_p50_ms']} ms, "
                  f"p95 {result['server_push_p95_ms']} ms")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "results.jsonl", "a") as fh:
                fh.write(json.dumps({"command": "idle-latency", **result}) + "\n")
    return 0
