"""Receipts and notices (X-Ricevuta): what happened to a message we sent, and a short bilingual
text an agent can read as an internal note."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from connector.pec.classify import ReceiptKind
from connector.pec.daticert import Daticert

_FAILURES = {
    ReceiptKind.NON_ACCETTAZIONE,
    ReceiptKind.ERRORE_CONSEGNA,
    ReceiptKind.RILEVAZIONE_VIRUS,
}


@dataclass(frozen=True)
class Receipt:
    """One receipt. ``referenced_ids`` are the keys of the message it certifies (daticert msgid,
    X-Riferimento-Message-ID, identificativo), bare ids; ``recipients`` the addresses the
    event concerns (consegna / ricezione, else the daticert recipients)."""

    kind: ReceiptKind
    referenced_ids: tuple[str, ...]
    certified_at: datetime | None
    recipients: tuple[str, ...]
    subject: str | None = None  # the certified message's subject
    provider: str | None = None  # gestore-emittente
    error: str | None = None  # daticert errore, when not "nessuno"
    error_detail: str | None = None  # daticert errore-esteso
    summary_it: str = ""
    summary_en: str = ""

    @property
    def summary(self) -> str:
        """Italian line, then English line."""
        return f"{self.summary_it}\n{self.summary_en}"

    @property
    def is_failure(self) -> bool:
        """The message did not (and will not) reach a recipient. A preavviso whose errore-esteso
        carries a permanent 5.x.x code counts: Aruba sends definitive failures as warnings."""
        if self.kind in _FAILURES:
            return True
        if self.kind is ReceiptKind.PREAVVISO_ERRORE_CONSEGNA and self.error_detail:
            return self.error_detail.lstrip().startswith("5.")
        return False


def build_receipt(
    kind: ReceiptKind,
    daticert: Daticert | None,
    *,
    referenced_ids: tuple[str, ...],
    certified_at: datetime | None,
    fallback_subject: str | None,
) -> Receipt:
    recipients: tuple[str, ...] = ()
    subject = fallback_subject
    provider = error = error_detail = None
    if daticert is not None:
        # Only addresses: a daticert field holding a name or a code is no recipient to show.
        event_address = next((a for a in (daticert.consegna, daticert.ricezione)
                              if a and "@" in a), None)
        recipients = (event_address,) if event_address else tuple(
            a for a in daticert.recipient_addresses if "@" in a)
        subject = daticert.oggetto or fallback_subject
        provider = daticert.gestore_emittente
        error = daticert.errore if daticert.errore and daticert.errore != "nessuno" else None
        error_detail = daticert.errore_esteso
    summary_it, summary_en = _summaries(kind, recipients, certified_at, subject,
                                        error_detail or error, provider)
    return Receipt(
        kind=kind,
        referenced_ids=referenced_ids,
        certified_at=certified_at,
        recipients=recipients,
        subject=subject,
        provider=provider,
        error=error,
        error_detail=error_detail,
        summary_it=summary_it,
        summary_en=summary_en,
    )


def format_time_en(moment: datetime | None) -> str:
    """``2024-02-01 10:11:12 +01:00``"""
    if moment is None:
        return "an unknown time"
    return f"{moment:%Y-%m-%d %H:%M:%S} {_offset(moment)}"


def format_time_it(moment: datetime | None) -> str:
    """``01/02/2024 10:11:12 +01:00``"""
    if moment is None:
        return "data sconosciuta"
    return f"{moment:%d/%m/%Y %H:%M:%S} {_offset(moment)}"


def _offset(moment: datetime) -> str:
    delta = moment.utcoffset()
    if delta is None:
        return ""
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _summaries(
    kind: ReceiptKind,
    recipients: tuple[str, ...],
    moment: datetime | None,
    subject: str | None,
    error: str | None,
    provider: str | None,
) -> tuple[str, str]:
    who = ", ".join(recipients) if recipients else None
    who_it = who or "destinatario sconosciuto"
    who_en = who or "unknown recipient"
    at_it = format_time_it(moment)
    at_en = format_time_en(moment)
    by_it = f" dal gestore {provider}" if provider else ""
    by_en = f" by {provider}" if provider else ""
    err = f": {error}" if error else ""
    if kind is ReceiptKind.ACCETTAZIONE:
        it = f"Ricevuta di accettazione: messaggio accettato{by_it} il {at_it} per {who_it}"
        en = f"Acceptance receipt: message accepted{by_en} on {at_en} for {who_en}"
    elif kind is ReceiptKind.NON_ACCETTAZIONE:
        it = f"Avviso di non accettazione: messaggio rifiutato{by_it} il {at_it}{err}"
        en = f"Non-acceptance notice: message refused{by_en} on {at_en}{err}"
    elif kind is ReceiptKind.PRESA_IN_CARICO:
        it = f"Ricevuta di presa in carico: messaggio preso in carico per {who_it} il {at_it}"
        en = f"Taken-in-charge receipt: message taken in charge for {who_en} on {at_en}"
    elif kind is ReceiptKind.AVVENUTA_CONSEGNA:
        it = f"Ricevuta di avvenuta consegna: consegnato a {who_it} il {at_it}"
        en = f"Delivery receipt: delivered to {who_en} on {at_en}"
    elif kind is ReceiptKind.ERRORE_CONSEGNA:
        it = f"Avviso di mancata consegna: non consegnato a {who_it} il {at_it}{err}"
        en = f"Non-delivery notice: not delivered to {who_en} on {at_en}{err}"
    elif kind is ReceiptKind.PREAVVISO_ERRORE_CONSEGNA:
        it = (f"Preavviso di mancata consegna: nessuna conferma di consegna per {who_it} "
              f"al {at_it}{err}")
        en = f"Delivery delay warning: no delivery confirmation for {who_en} as of {at_en}{err}"
    elif kind is ReceiptKind.RILEVAZIONE_VIRUS:
        it = f"Avviso di rilevazione virus: virus nel messaggio per {who_it} il {at_it}{err}"
        en = f"Virus detection notice: virus in the message for {who_en} on {at_en}{err}"
    else:
        it = f"Avviso PEC di tipo sconosciuto del {at_it} per {who_it}{err}"
        en = f"PEC notice of unknown kind on {at_en} for {who_en}{err}"
    if subject:
        it += f' (oggetto "{subject}")'
        en += f' (subject "{subject}")'
    return it, en
