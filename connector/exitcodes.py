"""Every exit code of every ``postmaster-bridge`` command, sysexits(3) style.

One table, so that a cron job, a systemd unit or an MTA can tell "all done" from "retry later"
from "look at the error list" from "fix the config". README.md's exit code table is rendered
from ``EXIT_CODES`` (``markdown_table()``; a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EX_OK = 0
EX_FAILURE = 1  # the command could not do what was asked, for the reason it printed
EX_USAGE = 64  # sysexits EX_USAGE: the command line is wrong
EX_DATAERR = 65  # sysexits EX_DATAERR: a mail failed for good (it is in the error list)
EX_NOINPUT = 66  # sysexits EX_NOINPUT: a file, message or job named by the admin is not there
EX_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE: an account or the helpdesk could not be used
EX_SOFTWARE = 70  # sysexits EX_SOFTWARE: the service's workers ended without being asked to
EX_OSERR = 71  # sysexits EX_OSERR: the HTTP port cannot be opened
EX_CANTCREAT = 73  # sysexits EX_CANTCREAT: a file to write exists already or cannot be written
EX_IOERR = 74  # sysexits EX_IOERR: the ledger is damaged (store check says where)
EX_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: held back; the same command later will retry it
EX_CONFIG = 78  # sysexits EX_CONFIG: the configuration (or a filter file) is invalid
EX_INTERRUPTED = 130  # Ctrl-C outside `run` (128 + SIGINT)


@dataclass(frozen=True)
class ExitCode:
    code: int
    name: str
    commands: str
    meaning: str


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(EX_OK, "OK", "all",
             "done; for `run --once`, `import`, `deliver` and `errors replay`: every mail "
             "reached a final state (ticket, follow-up, note, ignored, duplicate, skipped, or "
             "held over the sender's daily cap: see `held list`)"),
    ExitCode(EX_FAILURE, "FAILURE", "`outbound retry`, `install`, `uninstall`, `store migrate`",
             "not done, for the reason printed (a job that cannot be retried, a helpdesk "
             "object the helpdesk refused, a store written by a newer bridge); `store migrate "
             "--check`: migrations are pending"),
    ExitCode(EX_USAGE, "EX_USAGE", "all",
             "wrong command line: unknown option, bad `--since`, `errors replay` or `held "
             "release` on a dry-run host, `store backup` onto the ledger itself"),
    ExitCode(EX_DATAERR, "EX_DATAERR", "`run --once`, `import`, `deliver`, `errors replay`, "
             "`held release`, `filters test`",
             "a mail failed for good: it is in `errors list` (and the account's error folder); "
             "`deliver`: the MTA returns it to the sender with the reason; `filters test`: the "
             "mail cannot be parsed"),
    ExitCode(EX_NOINPUT, "EX_NOINPUT", "`import`, `messages show`, `errors show`, `errors "
             "export`, `errors replay`, `errors dismiss`, `held release`, `outbound show`, "
             "`outbound retry`, `store`",
             "a file, message or job named on the command line does not exist (`errors "
             "export`: its copy is gone; `store`: there is no ledger yet)"),
    ExitCode(EX_UNAVAILABLE, "EX_UNAVAILABLE", "`check`, `run --once`, `install`, "
             "`uninstall`, `filters test`",
             "an account or the helpdesk could not be reached or refused the login (`filters "
             "test`: the decision needs the helpdesk and it could not be asked); with `run "
             "--once` this wins over 65 and 75"),
    ExitCode(EX_SOFTWARE, "EX_SOFTWARE", "`run`, `serve`",
             "the service's workers ended without being asked to (a bug): let the supervisor "
             "restart it"),
    ExitCode(EX_OSERR, "EX_OSERR", "`serve`", "the webhook's port cannot be opened"),
    ExitCode(EX_CANTCREAT, "EX_CANTCREAT", "`init`",
             "a file to write exists already (nothing was written) or cannot be written"),
    ExitCode(EX_IOERR, "EX_IOERR", "`run`, `import`, `errors replay`, `store check`, `store "
             "backup`",
             "the ledger is damaged: nothing more was processed and no mail moved; `store "
             "check` lists the damage, restore a backup (`deliver` exits 75 instead)"),
    ExitCode(EX_TEMPFAIL, "EX_TEMPFAIL", "`run --once`, `import`, `deliver`, `errors replay`, "
             "`held release`; any command on a PostgreSQL store",
             "a mail was held back (the helpdesk was unreachable or asked to wait): the next "
             "pass, the same import, or the MTA's next delivery attempt retries it; `deliver` "
             "also on any error, configuration errors included, so the MTA keeps the mail; "
             "any command: the PostgreSQL store cannot be reached or refused the login"),
    ExitCode(EX_CONFIG, "EX_CONFIG", "all but `deliver`",
             "the configuration or a filter file is invalid: every problem is printed, "
             "nothing was touched"),
    ExitCode(EX_INTERRUPTED, "", "all but `run` and `serve`", "interrupted by Ctrl-C"),
)


def for_mail(*, failed: int, held: int, unreachable: bool = False) -> int:
    """The exit code of a command that processed mail: an unreachable account or helpdesk
    first (nothing was even tried there), then mail that failed for good (an admin must look),
    then mail held back (it retries by itself)."""
    if unreachable:
        return EX_UNAVAILABLE
    if failed:
        return EX_DATAERR
    if held:
        return EX_TEMPFAIL
    return EX_OK


def worst(codes: Iterable[int]) -> int:
    """The code to exit with when several steps each have one (``for_mail``'s order)."""
    order = (EX_UNAVAILABLE, EX_DATAERR, EX_TEMPFAIL)
    seen = [c for c in codes if c != EX_OK]
    for code in order:
        if code in seen:
            return code
    return seen[0] if seen else EX_OK


def markdown_table() -> str:
    lines = ["| code | name | commands | meaning |", "|---|---|---|---|"]
    lines += [f"| {e.code} | {e.name} | {e.commands} | {e.meaning} |" for e in EXIT_CODES]
    return "\n".join(lines) + "\n"
