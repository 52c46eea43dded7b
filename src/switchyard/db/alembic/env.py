"""Alembic environment: the connection comes from `switchyard.db.migrate`, never from a file.

Each revision commits in a transaction of its own (with its alembic_version stamp), so a
revision may step outside it (`autocommit_block`, for CREATE INDEX CONCURRENTLY) and an
interrupted upgrade resumes at the first revision not stamped."""

from alembic import context

from switchyard.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
