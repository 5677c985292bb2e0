"""Host helpdesk adapters: the only place that speaks a helpdesk's HTTP API."""
