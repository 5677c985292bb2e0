"""CPU per mail of ``Pipeline.process`` in-process: understanding (parse, PEC, classifiers,
filters, requester, decision), the ledger in memory and the dry-run host, over the benchmark
corpus. No Dovecot, no second process: a figure that other load on the machine moves far less
than the wall-clock rates of ``run.py e2e``.

    python3 bench/pipeline_cpu.py [--count 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

from connector.config import config_from_mapping  # noqa: E402
from connector.hosts.dryrun import DryRunAdapter  # noqa: E402
from connector.service.filtering import load_rules  # noqa: E402
from connector.service.pipeline import Pipeline  # noqa: E402
from connector.store.sqlite import SQLiteStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args()
    mails = [m.raw for m in corpus.generate(args.count, 1.0, args.seed)]
    config = config_from_mapping({
        "store": {"path": ":memory:"}, "host": {"type": "dry-run"},
        "filters": {"sender_cap_per_day": 0},  # the corpus's senders write many mails a day
        "accounts": [{"name": "bench", "protocol": "imap", "host": "127.0.0.1",
                      "security": "none", "username": "support@bench.example.com",
                      "password": "${PATH}"}]}, "bench", Path(tempfile.gettempdir()))
    best: float | None = None
    for run in range(args.repeat):
        store = SQLiteStore(":memory:")
        pipeline = Pipeline(config.accounts[0], config.host, store,
                            DryRunAdapter(io.StringIO()), load_rules(config))
        gc.collect()
        start = time.process_time()
        for number, raw in enumerate(mails):
            pipeline.process(f"r{number}", raw)
        took = time.process_time() - start
        store.close()
        best = took if best is None else min(best, took)
        print(f"run {run + 1}: {took:.2f} s CPU, {1000 * took / len(mails):.2f} ms/mail",
              flush=True)
    assert best is not None
    print(f"best: {1000 * best / len(mails):.2f} ms/mail over {len(mails)} mails")
    return 0


if __name__ == "__main__":
    sys.exit(main())
