"""Persistence: SQLAlchemy 2 models, the repository the core uses, and Alembic migration."""
