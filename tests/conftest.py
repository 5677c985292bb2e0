"""Shared fixtures. Dovecot: one real server for the whole session, a fresh user per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from dovecot import DOVECOT, DovecotServer, MailUser


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot on 127.0.0.1 (IMAP, IMAPS, POP3, POP3S), started once per session."""
    if not os.access(DOVECOT, os.X_OK):
        pytest.fail(f"{DOVECOT} not found: run scripts/install-test-deps.sh")
    with DovecotServer() as server:
        yield server


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> MailUser:
    """A new user with an empty mailbox, so tests never see each other's mail."""
    return dovecot.add_user()
