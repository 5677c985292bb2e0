"""Italian PEC (posta elettronica certificata): pure analysis of raw messages.

Entry points: ``analyze_pec(raw)`` for one message, ``find_pec(raw)`` to also find a PEC
forwarded inside an ordinary message. No I/O here; the pipeline decides what to do.
"""

from connector.pec.classify import (
    HeaderClass,
    PecKind,
    ReceiptKind,
    classify_headers,
    looks_like_pec_subject,
    strip_pec_prefix,
    strip_service_prefix,
)
from connector.pec.daticert import (
    Daticert,
    DaticertError,
    DaticertRecipient,
    RecipientType,
    parse_daticert,
)
from connector.pec.envelope import analyze_pec, find_pec, with_trust
from connector.pec.ids import normalize_msgid
from connector.pec.model import PecInfo, ServicePart, ServiceRole
from connector.pec.receipts import Receipt
from connector.pec.signature import SignatureStatus, SignatureVerdict, verify_detached
from connector.pec.trust import TrustStore

__all__ = [
    "Daticert",
    "DaticertError",
    "DaticertRecipient",
    "HeaderClass",
    "PecInfo",
    "PecKind",
    "Receipt",
    "ReceiptKind",
    "RecipientType",
    "ServicePart",
    "ServiceRole",
    "SignatureStatus",
    "SignatureVerdict",
    "TrustStore",
    "analyze_pec",
    "classify_headers",
    "find_pec",
    "looks_like_pec_subject",
    "normalize_msgid",
    "parse_daticert",
    "strip_pec_prefix",
    "strip_service_prefix",
    "verify_detached",
    "with_trust",
]
