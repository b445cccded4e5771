"""Outgoing webhooks for bots: a registry (`repository`), the outbox rows written in
the message batch's transaction (`outbox`), the delivery worker (`worker`), and the
rule that keeps deliveries out of the server's own network (`addresses`)."""
