"""`run` serves /metrics and /healthz on the service port, beside the mailbox workers, and
stops cleanly on SIGTERM. The bridge is a real process; Zendesk is the HTTP test double."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dovecot import DovecotServer, MailUser
from zendesk_double import ZendeskDouble
from zendesk_responses import account, customer_mail, write_config

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_run_serves_metrics_and_health(dovecot: DovecotServer, mailbox_user: MailUser,
                                       tmp_path: Path) -> None:
    port = free_port()
    with ZendeskDouble(tmp_path / "zendesk.json") as zd:
        host = {"type": "zendesk", "url": zd.url, "timeout": 5, "max_attempts": 2,
                "auth": {"type": "api_token", "email": zd.email,
                         "api_token_file": str(tmp_path / "token")}}
        (tmp_path / "token").write_text(zd.api_token + "\n")
        config = write_config(
            tmp_path, [account(dovecot, mailbox_user, "support", poll_interval=0.01)],
            host=host, service={"public_url": "https://bridge.example.it", "host": "127.0.0.1",
                                "port": port})
        dovecot.append(mailbox_user, [customer_mail("Stampante", "m1@example.org")])
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "-q", "--config", str(config), "run"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"

            def ticketed() -> bool:
                try:
                    status, body = get(base + "/metrics")
                except OSError:
                    return False
                return 'pmb_messages_total{account="support",outcome="ticketed"} 1.0' in body

            try:
                wait_for(ticketed)
            except AssertionError:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=30)
                raise AssertionError(err.decode()[-3000:]) from None
            assert len(zd.tickets()) == 1
            status, body = get(base + "/metrics")
            assert status == 200
            assert 'pmb_account_enabled{account="support"} 1.0' in body
            assert 'pmb_host_calls_total{method="POST",status="201"}' in body
            status, body = get(base + "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert get(base + "/nothing")[0] == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]
