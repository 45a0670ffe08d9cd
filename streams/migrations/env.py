"""Alembic environment: migrations run on the connection :mod:`streams.migrate` hands over.

There is no alembic.ini: :func:`streams.migrate.alembic_config` builds the configuration and
passes a live synchronous connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
