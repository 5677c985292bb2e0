"""Typed errors. Every stage raises one of these so the service can decide what to do:
retry later (transient), park the message in the error folder (permanent), or refuse to start
(configuration)."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is wrong. ``path`` is the file, ``key`` the dotted key path."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = message
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ConfigErrors(ConfigError):
    """Several configuration problems of one file, found in one pass (``problems``)."""

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(first.reason, path=first.path, key=first.key)
        self.args = ("\n".join(str(p) for p in self.problems),)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class NotFoundError(BridgeError):
    """A message, job or file the admin named on the command line does not exist."""


class UsageError(BridgeError):
    """An option's value is malformed (the command line, not the configuration)."""


class UnreadableMail(BridgeError):
    """The bridge cannot understand this mail: permanent, so it goes to the error folder at
    once (trying again would meet the same bytes). Never raised for its From line."""


class ParseError(UnreadableMail):
    """A message cannot be turned into the normalized model: it is not a mail."""


class FetchError(BridgeError):
    """Talking to the mailbox failed (connection, login, protocol)."""


class AuthenticationError(FetchError):
    """The mailbox refused the credentials."""


class TokenError(AuthenticationError):
    """No OAuth2 access token could be had right now (issuer unreachable, 5xx, throttled,
    a device-code authorization still pending): worth trying again later."""


class GrantRevokedError(TokenError):
    """The OAuth2 grant is gone for good: consent revoked, refresh token expired or revoked,
    the app registration deleted or its secret expired. Retrying cannot help, so the account
    is disabled; ``remedy`` says exactly what the admin must do."""

    def __init__(self, message: str, *, remedy: str) -> None:
        self.remedy = remedy
        super().__init__(f"{message}. {remedy}")


class CertificateError(BridgeError):
    """A server's TLS certificate did not verify (connector.tls). Permanent: every retry fails
    the same way until an admin fixes the certificate or ``ca_file``, so the account stops
    with this error instead of retrying."""


class StoreCorruptError(BridgeError):
    """The ledger database is damaged (``PRAGMA quick_check`` failed). Processing stops and
    no mail is moved: the ledger is what says which mail was already ticketed."""


class LeaseLostError(BridgeError):
    """This instance no longer holds the lease it worked an account under (it expired by the
    database's clock, another instance took it, or it was handed back): the effect was not
    recorded, and the account's work stops here (its new holder resumes it)."""


class StoreSchemaError(BridgeError):
    """The store's schema cannot be used by this bridge: a newer bridge migrated it, or
    (``store migrate --check``) migrations are pending."""


class StoreUnavailableError(BridgeError):
    """The store cannot be reached (PostgreSQL down, refused login, network cut): nothing was
    processed and no mail moved. The message never carries the DSN's password."""


class HostError(BridgeError):
    """The helpdesk API failed. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class TransientHostError(HostError):
    """Worth retrying later: timeouts, 5xx, 429, 409."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, body=body)


class PermanentHostError(HostError):
    """Retrying will not help (4xx other than 409/429): the message goes to the error folder."""


class HostCertificateError(CertificateError, HostError):
    """The helpdesk's TLS certificate did not verify. Not the message's fault: it stays in
    the inbox and the account stops until the certificate is fixed."""


class MessageTooLarge(BridgeError):
    """The message is over the account's ``max_size``."""


class TicketClosedError(PermanentHostError):
    """The ticket is closed and cannot take comments: open a follow-up ticket instead."""

    def __init__(self, ticket_id: str, message: str = "", *, body: str | None = None) -> None:
        self.ticket_id = ticket_id
        super().__init__(message or f"ticket #{ticket_id} is closed", status=422, body=body)
