"""Incoming webhooks: proving a request came from its claimed sender before it becomes a job."""
