"""Creating and dropping throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.services import admin_database_url

__all__ = ["create_database", "drop_database", "url_for"]


def _dsn(database: str) -> str:
    url = make_url(admin_database_url()).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def url_for(database: str) -> str:
    """The asyncpg SQLAlchemy URL of ``database`` on the test server."""
    return (
        make_url(admin_database_url()).set(database=database).render_as_string(hide_password=False)
    )


async def create_database(name: str) -> str:
    """Create ``name`` and return its SQLAlchemy URL."""
    admin = make_url(admin_database_url()).database or "postgres"
    connection = await asyncpg.connect(_dsn(admin))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url_for(name)


async def drop_database(name: str) -> None:
    """Drop ``name``, disconnecting whoever still uses it."""
    admin = make_url(admin_database_url()).database or "postgres"
    connection = await asyncpg.connect(_dsn(admin))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
