"""Alembic environment: the connection comes from `switchyard.db.migrate`, never from a file."""

from alembic import context

from switchyard.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
