"""postmaster-bridge: mailboxes (IMAP, POP3, PEC) to helpdesk tickets and back.

The package reads as the flow of a message:

    config -> fetch -> mail (parse) -> pec -> filters -> decide -> hosts -> store -> service -> cli

Pure stages (``mail``, ``pec``, ``filters``, ``decide``) never import the I/O stages
(``fetch``, ``hosts``, ``store``, ``service``).
"""

__version__ = "0.1.0"
