"""Helpdesk requests per mail: ``import`` (live ticket creation) against ``import --history``
(Zendesk's Ticket Import API), on the benchmark corpus, against tests/zendesk_double.py.

At a real Zendesk the time goes into round trips (100-300 ms each, one in flight per account),
so requests per mail is the figure that decides how long a backlog takes; the projection at
150 ms adds the job-status waits the history import really sleeps. ``python3
bench/history_import.py --count 2000 --scale 0.05`` (a minute or two); 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import io
import json
import mailbox
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "tests", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import yaml  # noqa: E402
from corpus import generate  # noqa: E402
from zendesk_double import ZendeskDouble  # noqa: E402

ROUTES = (("POST", "/api/v2/imports/tickets/create_many"), ("POST", "/api/v2/imports/tickets"),
          ("GET", "/api/v2/job_statuses/"), ("POST", "/api/v2/tickets"),
          ("PUT", "/api/v2/tickets/"), ("GET", "/api/v2/tickets"),
          ("POST", "/api/v2/uploads"), ("GET", "/api/v2/users/search"),
          ("POST", "/api/v2/users/create_or_update"), ("POST", "/oauth/tokens"))


def route(entry: dict[str, object]) -> str:
    method, path = str(entry["method"]), str(entry["path"])
    for m, prefix in ROUTES:
        if method == m and path.startswith(prefix):
            return f"{m} {prefix}"
    return f"{method} other"


def config_for(workdir: Path, zd: ZendeskDouble, name: str) -> Path:
    secret = workdir / "zendesk.secret"
    secret.write_text(zd.client_secret)
    (workdir / "imap.secret").write_text("unused")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(workdir / f"{name}.sqlite3")},
        "host": {"type": "zendesk", "url": zd.url, "timeout": 30,
                 "auth": {"type": "oauth", "client_id": zd.client_id,
                          "client_secret_file": str(secret)}},
        "accounts": [{"name": "bench", "protocol": "imap", "host": "127.0.0.1",
                      "security": "none", "username": "bench",
                      "password_file": str(workdir / "imap.secret"),
                      "own_addresses": ["support@acme.example"]}],
    }, sort_keys=False))
    return path


#: Runs the command in a child process and prints its peak RSS (kB) last on stderr.
_CHILD = ("import resource, runpy, sys\n"
          "try:\n    runpy.run_module('connector.cli', run_name='__main__')\n"
          "finally:\n    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
          " file=sys.stderr)\n")


def measure(zd: ZendeskDouble, config: Path, mbox: Path, mails: int, *extra: str,
            latency: float) -> dict[str, object]:
    zd.reset()
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _CHILD, "-q", "--config", str(config),
                           "import", *extra, str(mbox)], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    code = done.returncode
    rss = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("maxrss")]
    out = io.StringIO(done.stdout)
    log = zd.requests_log()
    routes = Counter(route(e) for e in log)
    polls = routes.get("GET /api/v2/job_statuses/", 0)
    # The history import waits 1 s before its first look at each job.
    projected = len(log) * latency + polls * 1.0
    return {"command": " ".join(["import", *extra]), "exit": code, "summary": out.getvalue()
            .strip(), "mails": mails, "requests": len(log),
            "requests_per_mail": round(len(log) / mails, 3), "wall_s": round(wall, 1),
            "tickets": len(zd.tickets()), "peak_rss_mb": round(int(rss[-1]) / 1024)
            if rss else None, "mbox_mb": round(mbox.stat().st_size / 2**20),
            f"projected_at_{int(latency * 1000)}ms_s": round(projected, 1),
            "routes": dict(sorted(routes.items()))}


def main_bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pmb-history-bench-") as tmp:
        workdir = Path(tmp)
        box = mailbox.mbox(workdir / "corpus.mbox")
        for mail in generate(args.count, args.scale):
            box.add(mail.raw)
        box.close()
        with ZendeskDouble(workdir / "zendesk.json") as zd:
            for name, extra in (("live", ()), ("history", ("--history",))):
                result = measure(zd, config_for(workdir, zd, name), workdir / "corpus.mbox",
                                 args.count, *extra, latency=args.latency_ms / 1000)
                print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
