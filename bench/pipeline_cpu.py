"""CPU per mail of ``Pipeline.process`` in-process: understanding (parse, PEC, classifiers,
filters, requester, decision), the ledger in memory and the dry-run host, over the benchmark
corpus. No Dovecot, no second process: a figure that other load on the machine moves far less
than the wall-clock rates of ``run.py e2e``.

    python3 bench/pipeline_cpu.py [--count 2000] [--repeat 3]

``--host bench`` sends to the bench host double (bench/host_double.py, zero latency, its own
process) through the real Zendesk adapter, with a ledger file (fsyncs as in ``run``):
everything the bridge does per mail but IMAP and parsing (done ahead, as the parse pool does
in ``run``), on this process's CPU clock. ``--in-flight N``
runs the pipeline as the poller does with ``host.max_in_flight`` N (threads, conversation
order) instead of one mail after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from host_double import HostDouble  # noqa: E402

from connector.config import config_from_mapping  # noqa: E402
from connector.hosts.dryrun import DryRunAdapter  # noqa: E402
from connector.hosts.factory import make_host  # noqa: E402
from connector.service.filtering import load_rules  # noqa: E402
from connector.service.pipeline import Pipeline  # noqa: E402
from connector.store.sqlite import SQLiteStore  # noqa: E402
from connector.understand import prepare  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--host", choices=("dry-run", "bench"), default="dry-run")
    parser.add_argument("--in-flight", type=int, default=1)
    args = parser.parse_args()
    mails = [m.raw for m in corpus.generate(args.count, 1.0, args.seed)]
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cpu-")))
        host: dict[str, Any] = {"type": "dry-run"}
        if args.host == "bench":
            double = stack.enter_context(HostDouble())
            (workdir / "token").write_text("bench-token")
            host = {"type": "zendesk", "url": double.url, "max_in_flight": args.in_flight,
                    "auth": {"type": "api_token", "email": "bench@example.com",
                             "api_token_file": str(workdir / "token")}}
        config = config_from_mapping({
            "store": {"path": ":memory:"}, "host": host,
            "filters": {"sender_cap_per_day": 0},  # the corpus's senders write many a day
            "accounts": [{"name": "bench", "protocol": "imap", "host": "127.0.0.1",
                          "security": "none", "username": "support@bench.example.com",
                          "own_addresses": ["support@bench.example.com"],
                          "password": "${PATH}"}]}, "bench", workdir)
        best: float | None = None
        for run in range(args.repeat):
            if args.host == "bench":
                double.reset()
                store = SQLiteStore(workdir / f"ledger-{run}.sqlite3")
                adapter: Any = make_host(config.host)
            else:
                store = SQLiteStore(":memory:")
                adapter = DryRunAdapter(io.StringIO())
            pipeline = Pipeline(config.accounts[0], config.host, store, adapter,
                                load_rules(config))
            items = [(f"r{n}", raw, prepare(raw, account_is_pec=False)
                      if args.host == "bench" else None) for n, raw in enumerate(mails)]
            gc.collect()
            start, wall = time.process_time(), time.perf_counter()
            _run(pipeline, config.accounts[0], items, args.in_flight)
            took, wall = time.process_time() - start, time.perf_counter() - wall
            store.close()
            best = took if best is None else min(best, took)
            print(f"run {run + 1}: {took:.2f} s CPU, {1000 * took / len(mails):.2f} ms/mail "
                  f"({len(mails) / wall:.0f} mails/s)", flush=True)
    assert best is not None
    print(f"best: {1000 * best / len(mails):.2f} ms/mail over {len(mails)} mails")
    return 0


def _run(pipeline: Pipeline, account: Any, items: list[tuple[str, bytes, Any]],
         in_flight: int) -> None:
    if in_flight <= 1:
        for ref, raw, prepared in items:
            pipeline.process(ref, raw, prepared=prepared)
        return
    from connector.service.inflight import InFlight
    from connector.service.runner import conversation_keys_of

    def work(item: tuple[str, bytes, Any]) -> Any:
        ref, raw, prepared = item
        return pipeline.process(ref, raw, prepared=prepared)

    with InFlight(work, in_flight) as flight:
        for item in items:
            flight.submit(item, conversation_keys_of(item[0], item[2],
                                                     account.subject_ticket_pattern))
            list(flight.finished())
        list(flight.drain())


if __name__ == "__main__":
    sys.exit(main())
