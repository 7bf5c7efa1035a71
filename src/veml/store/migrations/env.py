"""Alembic environment: always handed a live connection by :func:`veml.store.migrations.upgrade`
(inside VeML's own write transaction and lock), never a URL from an ini file."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
