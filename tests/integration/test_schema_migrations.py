"""The tables the code declares are the tables the migrations make, on SQLite and
PostgreSQL: Alembic's autogenerate comparison of ``node.db.models`` (which gathers
every table module: ``node.db.access``, ``node.db.auditing``) against a database
brought to head finds nothing to change, column types included."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from node.db.migrate import upgrade_to_head
from node.db.models import Base


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        upgrade_to_head(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_every_table_module_is_part_of_the_schema() -> None:
    # What a process that imports only node.db.models sees (Alembic's env.py does).
    assert {"account", "api_token", "audit_event", "job", "job_action"} <= set(Base.metadata.tables)
