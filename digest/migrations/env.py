"""Alembic environment: digest passes its own open connection (see digest/db.py)."""

from alembic import context

from digest.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - alembic's own CLI is not how digest migrates
    raise RuntimeError("run migrations through digest (digest.db.Database.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
