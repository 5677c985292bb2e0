"""What kind of PEC message this is, from its marker headers.

Only ``X-Ricevuta`` and ``X-Trasporto`` decide (header names case-insensitive). The subject never
decides: list software prefixes it and SdI calls some envelopes "Ricevuta di consegna".
``X-Riferimento-Message-ID`` does not decide either: envelopes carry it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class PecKind(StrEnum):
    ORDINARY = "ordinary"  # not a provider-generated PEC message
    TRANSPORT = "transport"  # busta di trasporto: X-Trasporto: posta-certificata
    ANOMALY = "anomaly"  # busta di anomalia: X-Trasporto: errore
    RECEIPT = "receipt"  # a receipt or notice: X-Ricevuta: <kind>


class ReceiptKind(StrEnum):
    ACCETTAZIONE = "accettazione"
    NON_ACCETTAZIONE = "non-accettazione"
    PRESA_IN_CARICO = "presa-in-carico"
    AVVENUTA_CONSEGNA = "avvenuta-consegna"
    ERRORE_CONSEGNA = "errore-consegna"
    PREAVVISO_ERRORE_CONSEGNA = "preavviso-errore-consegna"
    RILEVAZIONE_VIRUS = "rilevazione-virus"
    OTHER = "other"  # an X-Ricevuta value we do not know (new REM evidence names)


TRASPORTO_POSTA_CERTIFICATA = "posta-certificata"
TRASPORTO_ERRORE = "errore"


@dataclass(frozen=True)
class HeaderClass:
    """Outcome of the header check. ``marker`` is the deciding header value as written."""

    kind: PecKind
    receipt_kind: ReceiptKind | None = None
    marker: str | None = None
    notes: tuple[str, ...] = ()


def _token(value: str) -> str:
    """First word of a header value, lower-cased: 'Accettazione ; x' -> 'accettazione'."""
    return re.split(r"[\s;(]", value.strip(), maxsplit=1)[0].lower()


def receipt_kind_of(value: str) -> ReceiptKind:
    try:
        return ReceiptKind(_token(value))
    except ValueError:
        return ReceiptKind.OTHER


def classify_headers(headers: Iterable[tuple[str, str]]) -> HeaderClass:
    """Classify from (name, value) header pairs, names compared case-insensitively."""
    ricevuta: list[str] = []
    trasporto: list[str] = []
    for name, value in headers:
        lname = name.strip().lower()
        if lname == "x-ricevuta":
            ricevuta.append(str(value))
        elif lname == "x-trasporto":
            trasporto.append(str(value))
    notes: list[str] = []
    if ricevuta:
        kinds = {receipt_kind_of(v) for v in ricevuta}
        if len(kinds) > 1:
            notes.append(f"several different X-Ricevuta headers: {ricevuta}; the first decides")
        if trasporto:
            notes.append("both X-Ricevuta and X-Trasporto present; X-Ricevuta decides")
        kind = receipt_kind_of(ricevuta[0])
        if kind is ReceiptKind.OTHER:
            notes.append(f"unknown X-Ricevuta value {ricevuta[0].strip()!r}")
        return HeaderClass(PecKind.RECEIPT, kind, ricevuta[0].strip(), tuple(notes))
    if trasporto:
        value = _token(trasporto[0])
        if value == TRASPORTO_POSTA_CERTIFICATA:
            return HeaderClass(PecKind.TRANSPORT, None, trasporto[0].strip())
        if value == TRASPORTO_ERRORE:
            return HeaderClass(PecKind.ANOMALY, None, trasporto[0].strip())
        notes.append(f"unknown X-Trasporto value {trasporto[0].strip()!r}")
    return HeaderClass(PecKind.ORDINARY, None, None, tuple(notes))


def kind_from_tipo(tipo: str) -> tuple[PecKind, ReceiptKind | None]:
    """PecKind for a daticert ``tipo`` (ORDINARY when it is not a PEC tipo at all)."""
    value = tipo.strip().lower()
    if value == TRASPORTO_POSTA_CERTIFICATA:
        return PecKind.TRANSPORT, None
    try:
        return PecKind.RECEIPT, ReceiptKind(value)
    except ValueError:
        return PecKind.ORDINARY, None


_PEC_PREFIX = "POSTA CERTIFICATA:"
# Tags lists and filters put in front: "[List] [SPAM] POSTA CERTIFICATA: ..."
_LEADING_TAGS = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*")


def looks_like_pec_subject(subject: str | None) -> bool:
    """True when the subject starts with the envelope prefix ``POSTA CERTIFICATA:``, possibly
    after list tags. A hint for humans and filters only: classification never uses it."""
    if not subject:
        return False
    rest = subject[_LEADING_TAGS.match(subject).end() :]  # type: ignore[union-attr]
    return rest.upper().startswith(_PEC_PREFIX)


def strip_pec_prefix(subject: str) -> str:
    """Remove exactly one leading ``POSTA CERTIFICATA: `` (case-insensitive). A second one is
    part of the original subject: the sender replied to a PEC and kept the prefix."""
    stripped = subject.lstrip()
    if stripped.upper().startswith(_PEC_PREFIX):
        rest = stripped[len(_PEC_PREFIX) :]
        return rest[1:] if rest[:1] == " " else rest
    return subject


# Subject prefixes providers put on what they generate, longest first so that the
# "... PER SUP. TEMPO MASSIMO: " forms win over their shorter stems.
SERVICE_PREFIXES = tuple(sorted(
    (
        "POSTA CERTIFICATA: ",
        "ANOMALIA MESSAGGIO: ",
        "ACCETTAZIONE: ",
        "AVVISO DI NON ACCETTAZIONE: ",
        "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
        "PRESA IN CARICO: ",
        "CONSEGNA: ",
        "AVVISO DI MANCATA CONSEGNA: ",
        "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
        "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
        "PROBLEMA DI SICUREZZA: ",
    ),
    key=len,
    reverse=True,
))


def strip_service_prefix(subject: str) -> str:
    """Remove one provider prefix (any kind, case-insensitive) from a PEC subject."""
    stripped = subject.lstrip()
    upper = stripped.upper()
    for prefix in SERVICE_PREFIXES:
        if upper.startswith(prefix.rstrip()):
            rest = stripped[len(prefix.rstrip()) :]
            return rest[1:] if rest[:1] == " " else rest
    return subject
