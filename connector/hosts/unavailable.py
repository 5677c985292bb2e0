"""The helpdesk of a command that cannot log in to it: every call fails with the reason.

``filters test`` reads the config without its secrets (it may run where they are not set); a
decision that needs the helpdesk (is ticket #12 open? does this requester exist?) then says
that the helpdesk could not be asked and why, instead of guessing.
"""

from __future__ import annotations

from typing import Any, NoReturn

from connector.errors import HostError
from connector.hosts.base import Vocabulary


class UnavailableHost:
    """A HostAdapter whose every call raises HostError(``why``); ``vocabulary`` is the
    configured host's (pure: it needs no login)."""

    name = "unavailable"

    def __init__(self, why: str, vocabulary: Vocabulary) -> None:
        self.why = why
        self.vocabulary = vocabulary

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise HostError(f"not asked: {self.why}")

    check_credentials = create_ticket = add_comment = get_ticket = _refuse
    find_tickets_by_external_id = comment_exists = user_exists = _refuse
    add_tags = remove_tags = _refuse
