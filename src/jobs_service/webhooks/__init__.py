"""Incoming webhooks: verify the sender, split the events, store them durably, run them.

Used by the gateway's ``POST /webhooks/{source}`` and inbox routes, by
``jobsctl webhooks`` and by the ``relay_webhook_events`` task; like ``scheduler``, it is
service logic of its own rather than part of the HTTP layer.
"""
