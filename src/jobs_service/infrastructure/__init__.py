"""Adapters to the outside world: the database, Redis, HTTP; no job logic lives here."""
