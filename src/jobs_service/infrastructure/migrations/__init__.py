"""Alembic environment and revisions of the run-history schema."""
