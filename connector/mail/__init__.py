"""Parse stage: raw RFC 5322 bytes to one normalized, immutable model."""

from connector.mail.model import Address, Attachment, ParsedMessage
from connector.mail.parse import parse_message

__all__ = ["Address", "Attachment", "ParsedMessage", "parse_message"]
