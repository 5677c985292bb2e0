"""Built-in classifiers, one concern each, in their fixed order around the YAML filters.

Before the YAML filters (so filters can match what they set):

1. ``loop``        own address / own Message-ID / trusted X-OTOBO-Loop / per-sender daily cap;
                   when it fires nothing else runs (the mail is never ticketed).
2. ``attachments`` X-OTOBO-AttachmentCount and X-OTOBO-AttachmentExists.
3. ``bounce``      DSN/NDR: X-OTOBO-Bounce* and the ``bounce`` classification.
4. ``auto_reply``  out-of-office, auto-responders, list and receipt mail.
5. ``forwarded``   staff forwards: the original sender becomes the requester.
6. ``commands``    staff #close# / #tech# / #unsubscribe#.
7. ``dispatch``    system address (plus forms included) -> X-OTOBO-Queue.

After the YAML filters:

8. ``keywords``    configured keywords -> tags.

Each can be switched off in ``filters.classifiers`` under its ``name``, which is also its
module's name; the switches are this registry's names (``NAMES``). The first classification
wins: a bounce is not also an auto-reply.
"""

from connector.filters.classifiers.attachments import AttachmentsClassifier
from connector.filters.classifiers.auto_reply import AutoReplyClassifier
from connector.filters.classifiers.base import Classifier, ClassifierContext, Verdict
from connector.filters.classifiers.bounce import BounceClassifier
from connector.filters.classifiers.commands import CommandsClassifier
from connector.filters.classifiers.dispatch import DispatchClassifier
from connector.filters.classifiers.forwarded import ForwardedClassifier
from connector.filters.classifiers.keywords import KeywordsClassifier
from connector.filters.classifiers.loop import LoopClassifier

BEFORE_FILTERS: tuple[Classifier, ...] = (
    LoopClassifier(),
    AttachmentsClassifier(),
    BounceClassifier(),
    AutoReplyClassifier(),
    ForwardedClassifier(),
    CommandsClassifier(),
    DispatchClassifier(),
)
AFTER_FILTERS: tuple[Classifier, ...] = (KeywordsClassifier(),)
#: Every classifier's name, in run order: the ``filters.classifiers`` switches.
NAMES: tuple[str, ...] = tuple(c.name for c in BEFORE_FILTERS + AFTER_FILTERS)

__all__ = [
    "AFTER_FILTERS",
    "BEFORE_FILTERS",
    "NAMES",
    "Classifier",
    "ClassifierContext",
    "Verdict",
]
