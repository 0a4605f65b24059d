"""Message events and signed webhooks (issue 16 item 4).

``fanout`` is the hook the outbox's event helper calls (same transaction); ``endpoints`` keeps the
configured URLs and their encrypted secrets; ``delivery`` is the loop that claims pending deliveries and
POSTs them, signed by ``signer``, with backoff for up to three days; ``payload`` is what they carry.

Nothing is imported here: the outbox imports ``events.fanout`` on its hot path, and the delivery loop
imports the outbox — a package ``__init__`` that pulled both in would make a circle.
"""
