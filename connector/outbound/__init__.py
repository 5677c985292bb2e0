"""Outbound PEC replies: Zendesk macro -> trigger -> signed webhook -> durable queue ->
SMTP over TLS from the account's PEC mailbox -> note and tag on the ticket.

Modules, one concern each:

- ``settings``: ``OutboundSettings`` (``accounts[].outbound``), ``ServiceSettings``
  (``service:``), ``load_outbound(config)``.
- ``signature``: Zendesk webhook signatures.
- ``queue``: the durable job queue (own tables in the store's SQLite file).
- ``webhook``: the WSGI application (``/hooks/zendesk/<account>``, ``/healthz``).
- ``templates``, ``compose``: subject/body rendering and the safe ``EmailMessage``.
- ``smtp``: submission with TLS, outcome classes, rate limits.
- ``zendesk_api``: the Zendesk calls outbound needs.
- ``worker``: job processing, reporting on the ticket, the sweep.
- ``install``: install/uninstall planner.
- ``service``, ``commands``: running it, and what the CLI calls.
"""
