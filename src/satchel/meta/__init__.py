"""Metadata layer: SQLAlchemy Core schema and Alembic migrations (SQLite | PostgreSQL)."""

from satchel.meta import _schema as schema
from satchel.meta._db import SCHEMA_HEAD, Database, run_migrations

__all__ = ["SCHEMA_HEAD", "Database", "run_migrations", "schema"]
