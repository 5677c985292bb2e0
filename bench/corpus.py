"""A reproducible benchmark corpus: support mail of the kinds a helpdesk mailbox receives.

``generate(count, scale, seed)`` yields the same bytes for the same arguments, on every machine
(no clock, no global random state, no ``os.urandom``): message ``i`` depends only on ``seed``
and ``i`` (and on earlier messages when it is a reply), so a shorter corpus is a prefix of a
longer one. The default (2,000 mails, ``scale=1``) is 317 MB:

==================  ======  ==============================================================
kind                share   what it is
==================  ======  ==============================================================
``plain``           37.5 %  new request, text/plain (quoted-printable UTF-8), 1-8 kB
``html``            20 %    new request, multipart/alternative text + HTML, 4-30 kB
``reply``           20 %    a reply (In-Reply-To/References) to an earlier new request, from
                            its requester, quoting it; at most 4 replies per conversation
``small_file``      7 %     new request with a 20-200 kB attachment (PDF-like)
``large_file``      5 %     new request with one 0.5-2 MB attachment (PDF/ZIP/DOCX-like)
``inline_image``    3 %     HTML request with a 0.5-1.5 MB inline image (``cid:``) and
                            sometimes a second, small attachment
``pec``             7.5 %   an Italian PEC envelope (multipart/signed, ``daticert.xml``,
                            ``postacert.eml`` holding the certified mail, a valid detached
                            RSA signature made with a fixed throw-away key)
==================  ======  ==============================================================

Attachment bytes are random (incompressible, like real PDFs and images), base64 in the mail.
``scale`` multiplies every attachment and image size (``--scale 0.1`` for a quick run).
Senders are a pool of 180 customers (about a dozen mails each, 19 at most; PEC senders are
one-off), far below the filter stage's per-sender daily cap of 40, so no mail is held back.

``large_message(size)`` builds one mail of ``size`` bytes (a short text and one attachment),
for the peak-memory measurement.
``large_pec_message(size)`` is the same mail certified: a signed PEC envelope of ``size``
bytes whose ``postacert.eml`` carries it (``rss --pec``).

Run ``python bench/corpus.py --stats`` for the composition, ``--out DIR`` to write .eml files
(outside the repository).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import quopri
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path

DEFAULT_SEED = 20240611
DEFAULT_COUNT = 2000
SUPPORT_ADDRESS = "support@bench.example.com"
PEC_PROVIDER = "pec.bench-provider.it"
CUSTOMERS = 180  # 2,000 mails / 180 senders: about 11 each, under the 40/day cap
MAX_REPLIES_PER_THREAD = 4
BASE_DATE = dt.datetime(2024, 6, 3, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
CRLF = b"\r\n"

#: (kind, weight) in the order they are drawn.
KINDS: tuple[tuple[str, float], ...] = (
    ("plain", 37.5),
    ("html", 20.0),
    ("reply", 20.0),
    ("small_file", 7.0),
    ("large_file", 5.0),
    ("inline_image", 3.0),
    ("pec", 7.5),
)
NEW_KINDS = frozenset(k for k, _ in KINDS if k != "reply")

_WORDS = (
    "the invoice order delivery account portal password error server printer contract refund "
    "report customer payment shipment warehouse update request ticket problem access license "
    "renewal backup network connection schedule meeting document attachment version release "
    "fattura ordine consegna pagamento richiesta assistenza contratto rinnovo errore stampante "
    "cliente spedizione magazzino documento allegato perché così già più città però "
    "Rechnung Bestellung Lieferung Zahlung Anfrage Vertrag Fehler Drucker Kunde Übersicht "
    "facture commande livraison paiement données problème réponse client "
    "urgent today tomorrow yesterday morning afternoon please could would should again still "
    "not working since after before during with without about between under over"
).split()
_TOPICS = (
    "Invoice {n} shows the wrong VAT rate",
    "Cannot log in to the portal since yesterday",
    "Delivery of order {n} is late",
    "Richiesta di assistenza per l'ordine {n}",
    "Password reset link expired",
    "Anfrage zur Rechnung {n} – Übersicht fehlt",
    "Printer in office {n} is offline",
    "Contract renewal for account {n}",
    "Données manquantes dans le rapport {n}",
    "Refund for order {n}",
    "Errore di connessione al server {n}",
    "License key {n} not accepted",
)
_FIRST = ("Mario", "Giulia", "Luca", "Anna", "Paolo", "Sara", "Marco", "Elena", "Jonas", "Lena",
          "Pierre", "Claire", "John", "Emma", "Noah", "Olivia", "Francesca", "Matteo")
_LAST = ("Rossi", "Bianchi", "Ferrari", "Esposito", "Romano", "Colombo", "Müller", "Schmidt",
         "Dubois", "Martin", "Smith", "Brown", "Ricci", "Marino", "Greco", "Bruno")
_DOMAINS = ("acme-corp.example", "rossi-srl.example.it", "muster-gmbh.example.de",
            "dupont.example.fr", "globex.example.com", "initech.example.net")
_FILES = (
    ("report.pdf", "application/pdf", b"%PDF-1.7\n"),
    ("logs.zip", "application/zip", b"PK\x03\x04"),
    ("offerta.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     b"PK\x03\x04"),
    ("scan.pdf", "application/pdf", b"%PDF-1.4\n"),
)
_IMAGES = (("screenshot.png", "image/png", b"\x89PNG\r\n\x1a\n"),
           ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0"))


@dataclass(frozen=True)
class CorpusMail:
    """One mail of the corpus. ``token`` is unique and appears in the subject of new requests."""

    index: int
    kind: str
    token: str
    message_id: str
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class _Customer:
    name: str
    email: str


@dataclass
class _Thread:
    """A new request replies can answer."""

    customer: _Customer
    subject: str
    message_id: str
    body: str
    replies: int = 0


def _rng(seed: int, index: int, purpose: str = "") -> random.Random:
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _customers(seed: int) -> list[_Customer]:
    rng = _rng(seed, -1, "customers")
    out = []
    for n in range(CUSTOMERS):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        local = f"{first}.{last}{n}".lower().replace("ü", "ue")
        out.append(_Customer(f"{first} {last}", f"{local}@{rng.choice(_DOMAINS)}"))
    return out


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice(".?!.")


def _text(rng: random.Random, size: int) -> str:
    paragraphs: list[str] = []
    total = 0
    while total < size:
        para = " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))
        paragraphs.append(para)
        total += len(para) + 2
    return "\n\n".join(paragraphs)


def _wrap(text: str, width: int = 72) -> str:
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\n".join(lines)


def _qp(text: str) -> bytes:
    body = quopri.encodestring(text.replace("\n", "\r\n").encode("utf-8"))
    return body.replace(b"\r\n", b"\n").replace(b"\n", CRLF)


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _subject_header(subject: str) -> bytes:
    if subject.isascii():
        return subject.encode()
    return Header(subject, "utf-8").encode().encode()


def _html(text: str, extra: str = "") -> str:
    paras = "".join(f"<p style=\"margin:0 0 8px 0\">{p}</p>\n" for p in text.split("\n\n"))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>p{font-family:Arial}"
            "</style></head><body><div class=\"WordSection1\">\n"
            f"{paras}{extra}<table border=\"1\"><tr><td>Ref</td><td>42</td></tr></table>"
            "</div></body></html>")


def _file_bytes(rng: random.Random, magic: bytes, size: int) -> bytes:
    return magic + rng.randbytes(max(size - len(magic), 0))


def _headers(fields: list[tuple[str, bytes | str]]) -> bytes:
    out = b""
    for name, value in fields:
        data = value if isinstance(value, bytes) else value.encode()
        out += name.encode() + b": " + data + CRLF
    return out


def _part(content_type: str, body: bytes, *, encoding: str, extra: str = "") -> bytes:
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n{extra}"
    return head.encode() + CRLF + body


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    out = f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n".encode()
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part + CRLF
    return out + f"--{boundary}--\r\n".encode()


def _attachment(filename: str, content_type: str, data: bytes, *, inline_cid: str | None = None
                ) -> bytes:
    if inline_cid:
        extra = (f"Content-ID: <{inline_cid}>\r\n"
                 f"Content-Disposition: inline; filename=\"{filename}\"\r\n")
    else:
        extra = f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
    return _part(f"{content_type}; name=\"{filename}\"", _b64(data), encoding="base64",
                 extra=extra)


def _text_part(text: str) -> bytes:
    return _part("text/plain; charset=utf-8", _qp(_wrap(text)), encoding="quoted-printable")


def _html_part(html: str) -> bytes:
    return _part("text/html; charset=utf-8", _qp(html), encoding="quoted-printable")


def _mail(headers: list[tuple[str, bytes | str]], body: bytes) -> bytes:
    """Headers, MIME-Version and a body that starts with its own Content-Type lines."""
    return _headers(headers) + b"MIME-Version: 1.0\r\n" + body


class _Generator:
    def __init__(self, seed: int, scale: float) -> None:
        self.seed = seed
        self.scale = scale
        self.customers = _customers(seed)
        self.threads: list[_Thread] = []

    def size(self, rng: random.Random, low: int, high: int) -> int:
        return max(64, int(rng.randint(low, high) * self.scale))

    def mail(self, index: int) -> CorpusMail:
        rng = _rng(self.seed, index)
        kinds, weights = zip(*KINDS, strict=True)
        kind = rng.choices(kinds, weights)[0]
        open_threads = [t for t in self.threads if t.replies < MAX_REPLIES_PER_THREAD]
        if kind == "reply" and not open_threads:
            kind = "plain"
        token = f"B{self.seed % 1000:03d}-{index:05d}"
        date = format_datetime(BASE_DATE + dt.timedelta(minutes=index, seconds=rng.randint(0, 59)))
        message_id = f"bench-{self.seed}-{index:05d}@mail.{rng.choice(_DOMAINS)}"
        if kind == "reply":
            raw = self._reply(rng, rng.choice(open_threads[-200:]), message_id, date, token)
        elif kind == "pec":
            raw = self._pec(rng, index, message_id, date, token)
        else:
            raw = self._new(rng, kind, message_id, date, token)
        return CorpusMail(index, kind, token, message_id, raw)

    def _new(self, rng: random.Random, kind: str, message_id: str, date: str, token: str) -> bytes:
        customer = rng.choice(self.customers)
        subject = rng.choice(_TOPICS).format(n=rng.randint(1000, 99999)) + f" (ref {token})"
        text = _text(rng, rng.randint(800, 8000) if kind != "html" else rng.randint(3000, 20000))
        boundary = f"=_bench_{token}_"
        if kind == "plain":
            body = _text_part(text)
        elif kind == "html":
            body = _multipart("alternative", boundary + "alt",
                              [_text_part(text), _html_part(_html(text))])
        elif kind in ("small_file", "large_file"):
            name, ctype, magic = rng.choice(_FILES)
            size = (self.size(rng, 20_000, 200_000) if kind == "small_file"
                    else self.size(rng, 500_000, 2_000_000))
            body = _multipart("mixed", boundary + "mix", [
                _text_part(text), _attachment(name, ctype, _file_bytes(rng, magic, size))])
        elif kind == "inline_image":
            name, ctype, magic = rng.choice(_IMAGES)
            cid = f"img-{token}@bench"
            html = _html(text, f"<p><img src=\"cid:{cid}\" alt=\"screenshot\"></p>")
            related = _multipart("related", boundary + "rel", [
                _html_part(html),
                _attachment(name, ctype, _file_bytes(rng, magic, self.size(rng, 500_000,
                                                                           1_500_000)),
                            inline_cid=cid)])
            alternative = _multipart("alternative", boundary + "alt", [_text_part(text), related])
            if rng.random() < 0.5:
                fname, fctype, fmagic = rng.choice(_FILES)
                body = _multipart("mixed", boundary + "mix", [
                    alternative, _attachment(fname, fctype, _file_bytes(
                        rng, fmagic, self.size(rng, 10_000, 80_000)))])
            else:
                body = alternative
        else:
            raise ValueError(kind)
        self.threads.append(_Thread(customer, subject, message_id, text))
        return _mail([
            ("Return-Path", f"<{customer.email}>"),
            ("Received", "from mx.bench.example.com (mx.bench.example.com [192.0.2.10])\r\n"
                         f"\tby imap.bench.example.com with ESMTPS; {date}"),
            ("Date", date),
            ("From", f"\"{customer.name}\" <{customer.email}>".encode()
             if customer.name.isascii() else
             Header(customer.name, "utf-8").encode().encode() + f" <{customer.email}>".encode()),
            ("To", f"Support <{SUPPORT_ADDRESS}>"),
            ("Subject", _subject_header(subject)),
            ("Message-ID", f"<{message_id}>"),
            ("X-Mailer", "bench-corpus 1.0"),
        ], body)

    def _reply(self, rng: random.Random, thread: _Thread, message_id: str, date: str,
               token: str) -> bytes:
        thread.replies += 1
        text = _text(rng, rng.randint(300, 3000))
        quoted = "\n".join("> " + line for line in _wrap(thread.body).split("\n")[:60])
        full = f"{text}\n\nOn {BASE_DATE:%a %d %b %Y}, {thread.customer.name} wrote:\n{quoted}"
        boundary = f"=_bench_{token}_"
        if rng.random() < 0.5:
            body = _text_part(full)
        else:
            body = _multipart("alternative", boundary + "alt",
                              [_text_part(full), _html_part(_html(full))])
        references = f"<{thread.message_id}>"
        return _mail([
            ("Return-Path", f"<{thread.customer.email}>"),
            ("Date", date),
            ("From", f"<{thread.customer.email}>"),
            ("To", f"Support <{SUPPORT_ADDRESS}>"),
            ("Subject", _subject_header("Re: " + thread.subject)),
            ("Message-ID", f"<{message_id}>"),
            ("In-Reply-To", references),
            ("References", references),
        ], body)

    def _pec(self, rng: random.Random, index: int, message_id: str, date: str,
             token: str) -> bytes:
        """A provider envelope around a certified mail, signed like a provider signs it."""
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        sender = f"{first}.{last}{index}".lower().replace("ü", "ue") + "@pec.example.it"
        subject = rng.choice(_TOPICS).format(n=rng.randint(1000, 99999)) + f" (ref {token})"
        text = _text(rng, rng.randint(600, 4000))
        boundary = f"=_pec_{token}_"
        inner_parts = [_text_part(text)]
        if rng.random() < 0.4:
            inner_parts.append(_attachment("fattura.xml.p7m", "application/pkcs7-mime",
                                           _file_bytes(rng, b"0\x82", self.size(rng, 20_000,
                                                                               300_000))))
        inner_body = (_multipart("mixed", boundary + "orig", inner_parts)
                      if len(inner_parts) > 1 else inner_parts[0])
        original = _mail([
            ("Date", date),
            ("From", f"\"{first} {last}\" <{sender}>"),
            ("To", SUPPORT_ADDRESS),
            ("Subject", _subject_header(subject)),
            ("Message-ID", f"<{message_id}>"),
        ], inner_body)
        ident = f"opec{index}.20240603{index:06d}.{index % 97}.1.1@{PEC_PROVIDER}"
        when = BASE_DATE + dt.timedelta(minutes=index)
        self.threads.append(_Thread(_Customer(f"{first} {last}", sender), subject, message_id,
                                    text))
        return _pec_envelope(original, sender=sender, subject=subject, message_id=message_id,
                             ident=ident, when=when, date=date, token=token)


def _pec_envelope(original: bytes, *, sender: str, subject: str, message_id: str, ident: str,
                  when: dt.datetime, date: str, token: str) -> bytes:
    """A provider's transport envelope around ``original`` (postacert.eml): multipart/signed
    around multipart/mixed (notice, daticert.xml, postacert.eml), with a valid detached
    signature from the fixed bench signer."""
    daticert = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<postacert tipo="posta-certificata" errore="nessuno">\n'
        f"  <intestazione><mittente>{sender}</mittente>"
        f'<destinatari tipo="certificato">{SUPPORT_ADDRESS}</destinatari>'
        f"<risposte>{sender}</risposte><oggetto>{subject}</oggetto></intestazione>\n"
        "  <dati><gestore-emittente>BENCH PEC S.p.A.</gestore-emittente>\n"
        f'    <data zona="+0200"><giorno>{when:%d/%m/%Y}</giorno><ora>{when:%H:%M:%S}</ora>'
        "</data>\n"
        f"    <identificativo>{ident}</identificativo>\n"
        f"    <msgid>&lt;{message_id}&gt;</msgid>\n"
        '    <ricevuta tipo="completa"/>\n'
        f"    <consegna>{SUPPORT_ADDRESS}</consegna></dati>\n"
        "</postacert>\n"
    ).encode()
    notice = (f"Messaggio di posta certificata\n\nIl giorno {when:%d/%m/%Y} alle ore "
              f"{when:%H:%M:%S} il messaggio \"{subject}\" e' stato inviato da \"{sender}\"\n"
              f"indirizzato a:\n{SUPPORT_ADDRESS}\n")
    signed = _multipart("mixed", f"=_pec_{token}_mix", [
        _part("text/plain; charset=utf-8", _qp(notice), encoding="quoted-printable"),
        _part("application/xml; name=\"daticert.xml\"", _b64(daticert), encoding="base64",
              extra="Content-Disposition: inline; filename=\"daticert.xml\"\r\n"),
        _part("message/rfc822; name=\"postacert.eml\"", original, encoding="7bit",
              extra="Content-Disposition: inline; filename=\"postacert.eml\"\r\n"),
    ]).rstrip(CRLF)
    signature = _sign(signed)
    outer = f"=_pec_{token}_signed"
    body = (f"Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; "
            f"micalg=sha-256; boundary=\"{outer}\"\r\n\r\n"
            f"This is an S/MIME signed message\r\n\r\n--{outer}\r\n").encode()
    body += signed + f"\r\n--{outer}\r\n".encode()
    body += _part("application/x-pkcs7-signature; name=\"smime.p7s\"", _b64(signature),
                  encoding="base64",
                  extra="Content-Disposition: attachment; filename=\"smime.p7s\"\r\n")
    body += f"\r\n--{outer}--\r\n".encode()
    return _mail([
        ("Return-Path", f"<posta-certificata@{PEC_PROVIDER}>"),
        ("Date", date),
        ("Message-ID", f"<{ident}>"),
        ("X-Riferimento-Message-ID", f"<{message_id}>"),
        ("X-Trasporto", "posta-certificata"),
        ("X-TipoRicevuta", "completa"),
        ("From", f"\"Per conto di: {sender}\" <posta-certificata@{PEC_PROVIDER}>"),
        ("Reply-To", sender),
        ("To", SUPPORT_ADDRESS),
        ("Subject", _subject_header("POSTA CERTIFICATA: " + subject)),
    ], body)


# -- a fixed signing identity for PEC envelopes --------------------------------------------------


def _probable_prime(rng: random.Random, bits: int) -> int:
    small = [p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))]
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if any(candidate % p == 0 for p in small):
            continue
        d, r = candidate - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(24):
            x = pow(rng.randrange(2, candidate - 2), d, candidate)
            if x in (1, candidate - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, candidate)
                if x == candidate - 1:
                    break
            else:
                break
        else:
            return candidate


@lru_cache(maxsize=1)
def _signer():  # noqa: ANN202 - (certificate, private key) of the cryptography package
    """An RSA-2048 key and certificate derived from a fixed seed: the same on every run, so the
    corpus (signatures included; PKCS#1 v1.5 is deterministic) is byte-for-byte reproducible."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    rng = random.Random("bench-pec-signer")
    e = 65537
    while True:
        p, q = _probable_prime(rng, 1024), _probable_prime(rng, 1024)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    key = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q)).private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"posta-certificata@{PEC_PROVIDER}"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BENCH PEC S.p.A.")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(20240611)
            .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.UTC))
            .sign(key, hashes.SHA256()))
    return cert, key


def signer_pem() -> bytes:
    """The envelopes' signing certificate (self-signed), to trust as a PEC anchor."""
    from cryptography.hazmat.primitives import serialization

    return _signer()[0].public_bytes(serialization.Encoding.PEM)


def _sign(content: bytes) -> bytes:
    """Detached PKCS#7 signature over ``content`` without signed attributes (no signing time,
    so the bytes never change)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    cert, key = _signer()
    return (pkcs7.PKCS7SignatureBuilder().set_data(content)
            .add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                               pkcs7.PKCS7Options.NoAttributes,
                                               pkcs7.PKCS7Options.Binary]))


# -- public API ---------------------------------------------------------------------------------


def generate(count: int = DEFAULT_COUNT, scale: float = 1.0,
             seed: int = DEFAULT_SEED) -> Iterator[CorpusMail]:
    """The corpus, in delivery order (a reply always comes after the mail it answers)."""
    generator = _Generator(seed, scale)
    for index in range(count):
        yield generator.mail(index)


def large_message(size: int = 25 * 1024 * 1024, seed: int = DEFAULT_SEED) -> bytes:
    """One new request of about ``size`` bytes: a short text and one base64 attachment."""
    rng = _rng(seed, 10**9, "large")
    head = _mail([
        ("Date", format_datetime(BASE_DATE)),
        ("From", "\"Big Sender\" <big.sender@acme-corp.example>"),
        ("To", SUPPORT_ADDRESS),
        ("Subject", f"Large attachment ({size // (1024 * 1024)} MB)"),
        ("Message-ID", f"<bench-large-{size}@acme-corp.example>"),
    ], b"")
    text = _text_part("Here is the full export you asked for, please find it attached.")
    # base64 with CRLF every 76 characters: 78 bytes on the wire for every 57 of data.
    overhead = len(head) + len(text) + 600
    data_size = max(1, (size - overhead) * 57 // 78)
    attachment = _attachment("export.zip", "application/zip",
                             _file_bytes(rng, b"PK\x03\x04", data_size))
    return head + _multipart("mixed", "=_bench_large_", [text, attachment])


def large_pec_message(size: int = 25 * 1024 * 1024, seed: int = DEFAULT_SEED) -> bytes:
    """One PEC envelope of about ``size`` bytes, as a provider delivers it: multipart/signed
    around multipart/mixed (notice, ``daticert.xml``, ``postacert.eml``), whose postacert is
    ``large_message`` (a short text and one base64 attachment), with a valid detached
    signature from the fixed bench signer. The same bytes for the same arguments."""
    sender = "big.sender@pec.example.it"
    ident = f"opec-large.20240603080000.{size}.1.1@{PEC_PROVIDER}"
    message_id = f"bench-large-{size}@acme-corp.example"
    subject = f"Large attachment ({size // (1024 * 1024)} MB)"
    envelope_overhead = 6 * 1024  # headers, notice, daticert, signature: about 5 kB
    original = large_message(max(1, size - envelope_overhead), seed)
    return _pec_envelope(original, sender=sender, subject=subject, message_id=message_id,
                         ident=ident, when=BASE_DATE, date=format_datetime(BASE_DATE),
                         token="large")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The benchmark corpus: composition or files.")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="write NNNNN-kind.eml files into this directory")
    parser.add_argument("--stats", action="store_true", help="print the composition (default)")
    args = parser.parse_args(argv)
    if args.out is not None:
        repo = Path(__file__).resolve().parents[1]
        if args.out.resolve().is_relative_to(repo):
            print("refusing to write the corpus into the repository", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
    kinds: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    digest = hashlib.sha256()
    for mail in generate(args.count, args.scale, args.seed):
        kinds[mail.kind] += 1
        sizes[mail.kind] += mail.size
        digest.update(mail.raw)
        if args.out is not None:
            (args.out / f"{mail.index:05d}-{mail.kind}.eml").write_bytes(mail.raw)
    total = sum(sizes.values())
    print(f"{sum(kinds.values())} mails, {total / 1e6:.1f} MB, seed {args.seed}, scale "
          f"{args.scale}, sha256 {digest.hexdigest()[:16]}")
    for kind, _ in KINDS:
        if kinds[kind]:
            print(f"  {kind:13s} {kinds[kind]:5d}  {sizes[kind] / 1e6:8.1f} MB  "
                  f"avg {sizes[kind] / kinds[kind] / 1e3:8.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
