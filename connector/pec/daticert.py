"""``daticert.xml``, the provider's certification data, read into a typed record.

The XML comes from outside (and a forged one can sit inside a forwarded envelope), so it is
parsed with expat directly and any entity declaration is refused, which is what defusedxml would
do. External DTDs are never fetched by expat. Element names are matched without namespace and
case-insensitively; unknown elements are ignored, so new provider additions do not break us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from xml.parsers import expat

from connector.errors import ParseError

MAX_DATICERT_BYTES = 1_000_000  # real ones are about 1 KB


class DaticertError(ParseError):
    """daticert.xml is missing its root, malformed or hostile."""


class RecipientType(StrEnum):
    CERTIFICATO = "certificato"  # a PEC mailbox
    ESTERNO = "esterno"  # an ordinary mailbox: it will never send a delivery receipt
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DaticertRecipient:
    address: str
    type: RecipientType
    type_raw: str = ""


@dataclass(frozen=True)
class Daticert:
    """Fields of daticert.xml as written (strings stripped). ``tipo`` / ``errore`` are the root
    attributes; ``certified_at`` combines ``giorno``, ``ora`` and ``zona``."""

    tipo: str
    errore: str = "nessuno"
    mittente: str | None = None
    destinatari: tuple[DaticertRecipient, ...] = ()
    risposte: str | None = None
    oggetto: str | None = None
    gestore_emittente: str | None = None
    giorno: str | None = None
    ora: str | None = None
    zona: str | None = None
    certified_at: datetime | None = None
    identificativo: str | None = None
    msgid: str | None = None
    ricevuta: str | None = None  # completa / breve / sintetica
    consegna: str | None = None
    ricezione: str | None = None
    errore_esteso: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def recipient_addresses(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.destinatari)


@dataclass
class _Element:
    name: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)
    children: list[_Element] = field(default_factory=list)

    @property
    def value(self) -> str:
        return "".join(self.text).strip()

    def find(self, name: str) -> _Element | None:
        return next((c for c in self.children if c.name == name), None)

    def find_all(self, name: str) -> list[_Element]:
        return [c for c in self.children if c.name == name]


def parse_daticert(data: bytes) -> Daticert:
    """Parse daticert.xml bytes. Raises DaticertError when it cannot be read at all."""
    if len(data) > MAX_DATICERT_BYTES:
        raise DaticertError(f"daticert.xml is {len(data)} bytes, over {MAX_DATICERT_BYTES}")
    root = _parse_xml(data)
    if root.name != "postacert":
        raise DaticertError(f"root element is <{root.name}>, not <postacert>")
    notes: list[str] = []
    tipo = root.attrs.get("tipo", "").strip()
    if not tipo:
        notes.append("daticert.xml has no tipo attribute")
    intestazione = root.find("intestazione")
    if intestazione is None:
        notes.append("daticert.xml has no <intestazione>")
        intestazione = _Element("intestazione", {})
    dati = root.find("dati")
    if dati is None:
        notes.append("daticert.xml has no <dati>")
        dati = _Element("dati", {})

    destinatari = []
    for element in intestazione.find_all("destinatari"):
        if not element.value:
            continue
        raw_type = element.attrs.get("tipo", "").strip()
        try:
            kind = RecipientType(raw_type.lower())
        except ValueError:
            kind = RecipientType.UNKNOWN
        destinatari.append(DaticertRecipient(element.value, kind, raw_type))

    data_element = dati.find("data")
    giorno = ora = zona = None
    certified_at = None
    if data_element is not None:
        giorno = _text(data_element, "giorno")
        ora = _text(data_element, "ora")
        zona = data_element.attrs.get("zona", "").strip() or None
        certified_at, problem = certified_datetime(giorno, ora, zona)
        if problem:
            notes.append(problem)
    else:
        notes.append("daticert.xml has no certified date (<data>)")

    ricevuta_element = dati.find("ricevuta")
    ricevuta = None
    if ricevuta_element is not None:
        ricevuta = ricevuta_element.attrs.get("tipo", "").strip() or "completa"  # DTD default
    return Daticert(
        tipo=tipo,
        errore=root.attrs.get("errore", "").strip() or "nessuno",
        mittente=_text(intestazione, "mittente"),
        destinatari=tuple(destinatari),
        risposte=_text(intestazione, "risposte"),
        oggetto=_text(intestazione, "oggetto"),
        gestore_emittente=_text(dati, "gestore-emittente"),
        giorno=giorno,
        ora=ora,
        zona=zona,
        certified_at=certified_at,
        identificativo=_text(dati, "identificativo"),
        msgid=_text(dati, "msgid"),
        ricevuta=ricevuta,
        consegna=_text(dati, "consegna"),
        ricezione=_text(dati, "ricezione"),
        errore_esteso=_text(dati, "errore-esteso"),
        notes=tuple(notes),
    )


def _text(parent: _Element, name: str) -> str | None:
    element = parent.find(name)
    if element is None:
        return None
    return element.value or None


_GIORNO = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ORA = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_ZONA = re.compile(r"([+-])(\d{2}):?(\d{2})")


def certified_datetime(
    giorno: str | None, ora: str | None, zona: str | None
) -> tuple[datetime | None, str | None]:
    """``dd/mm/yyyy`` + ``hh:mm:ss`` + ``+hhmm`` as an aware datetime, or (None, why not)."""
    if not giorno or not ora:
        return None, "daticert.xml date is incomplete (giorno/ora missing)"
    day = _GIORNO.fullmatch(giorno.strip())
    time = _ORA.fullmatch(ora.strip())
    if not day or not time:
        return None, f"daticert.xml date {giorno!r} {ora!r} is not dd/mm/yyyy hh:mm:ss"
    zone_match = _ZONA.fullmatch((zona or "").strip())
    if not zone_match:
        return None, f"daticert.xml date has no usable zona ({zona!r}): time left out"
    sign = -1 if zone_match.group(1) == "-" else 1
    offset = timedelta(hours=int(zone_match.group(2)), minutes=int(zone_match.group(3)))
    try:
        moment = datetime(
            int(day.group(3)), int(day.group(2)), int(day.group(1)),
            int(time.group(1)), int(time.group(2)), int(time.group(3) or 0),
            tzinfo=timezone(sign * offset),
        )
    except ValueError as exc:
        return None, f"daticert.xml date is impossible: {exc}"
    return moment, None


def _parse_xml(data: bytes) -> _Element:
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Element] = []
    roots: list[_Element] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        element = _Element(_local(name), {_local(k): v for k, v in attrs.items()})
        if stack:
            stack[-1].children.append(element)
        else:
            roots.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(value: str) -> None:
        if stack:
            stack[-1].text.append(value)

    def refuse_entity(*_args: object) -> None:
        raise DaticertError("daticert.xml declares entities: refused")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    try:
        parser.Parse(_transcode_if_unknown(data), True)
    except expat.ExpatError as exc:
        raise DaticertError(f"daticert.xml is not well-formed: {exc}") from exc
    if not roots:
        raise DaticertError("daticert.xml has no root element")
    return roots[0]


_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")
_EXPAT_ENCODINGS = {"utf-8", "utf8", "utf-16", "iso-8859-1", "latin-1", "us-ascii", "ascii"}


def _transcode_if_unknown(data: bytes) -> bytes:
    """expat knows only UTF-8/16, Latin-1 and ASCII: re-encode e.g. windows-1252 as UTF-8."""
    match = _DECLARED_ENCODING.match(data)
    if not match:
        return data
    declared = match.group(1).decode("ascii").lower()
    if declared in _EXPAT_ENCODINGS:
        return data
    try:
        text = data.decode(declared)
    except (LookupError, UnicodeDecodeError) as exc:
        raise DaticertError(f"daticert.xml declares an unusable encoding {declared!r}") from exc
    body = text[text.index("?>") + 2 :]
    return b'<?xml version="1.0" encoding="UTF-8"?>' + body.encode("utf-8")


def _local(name: str) -> str:
    """Element name without namespace prefix (expat without namespaces keeps 'ns:name')."""
    return name.rsplit(":", 1)[-1].lower()
