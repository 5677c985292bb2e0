"""TLS policy shared by every connection the bridge opens: IMAP, POP3, SMTP and the helpdesk.

Certificates are verified (against the system's CAs, or ``ca_file``), TLS 1.2 at least.
``verify_tls: false`` turns verification off, which hands the password to whoever sits on the
path; it is accepted for a loopback host (a test server on this machine) and otherwise only
with ``insecure_tls_i_understand: true`` beside it, and then every connection logs a warning,
so the setting cannot be forgotten in a production config.

A certificate that does not verify is a permanent failure: retrying changes nothing until an
admin fixes the server's certificate or ``ca_file``. ``certificate_failure(exc)`` finds it in
an exception's cause chain, so the fetch, SMTP and helpdesk layers keep their own error
types and the service still tells this case apart.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl

log = logging.getLogger("connector.tls")

INSECURE_KEY = "insecure_tls_i_understand"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unverified_refusal(host: str, verify_tls: bool, insecure_ack: bool) -> str | None:
    """Why a ``verify_tls`` setting is refused for ``host``, or None when it is allowed."""
    if verify_tls or insecure_ack or is_loopback(host):
        return None
    return (f"may be false only for a loopback host, not {host!r}: without verification "
            "anyone on the path can read the password. Give the server a certificate your "
            f"system trusts or set ca_file; if you must, add '{INSECURE_KEY}: true' (every "
            "connection then logs a warning)")


def warn_unverified(host: str, verify_tls: bool, who: str) -> None:
    """The warning every unverified connection to a non-loopback host logs."""
    if not verify_tls and not is_loopback(host):
        log.warning("%s: TLS certificate of %s NOT verified (%s: true): the connection and "
                    "its password can be intercepted", who, host, INSECURE_KEY)


def client_context(*, host: str, ca_file: str | None, verify_tls: bool,
                   who: str) -> ssl.SSLContext:
    """A client context for one connection to ``host``. With ``verify_tls`` False it accepts
    any certificate (configuration has already checked that this is allowed) and logs the
    warning for a non-loopback host."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify_tls:
        warn_unverified(host, verify_tls, who)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_failure(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (itself, a cause or a context, or
    the reason urllib3 wraps inside requests' errors), or None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
    return None


def describe_certificate_failure(error: ssl.SSLCertVerificationError, host: str) -> str:
    """One sentence naming the host, what failed and what to do."""
    detail = error.verify_message or error.reason or str(error)
    return (f"TLS certificate of {host} not trusted ({detail}); a permanent failure: fix the "
            "server's certificate or set ca_file, then re-enable the account")


__all__ = ["INSECURE_KEY", "certificate_failure", "client_context",
           "describe_certificate_failure", "is_loopback", "unverified_refusal",
           "warn_unverified"]
