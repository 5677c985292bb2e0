"""Parse stage: raw RFC 5322 bytes to one normalized, immutable model."""

from connector.mail.model import Address, Attachment, ParsedMessage

__all__ = ["Address", "Attachment", "ParsedMessage"]
