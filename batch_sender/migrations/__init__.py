"""Alembic migrations of the results database, shipped in the package so the tool can migrate."""
