"""Microsoft Graph: the HTTP client the Graph mailbox and the Graph sender share."""
