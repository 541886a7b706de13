"""Hand-written statements built from model instances, as Django would write them."""
from __future__ import annotations

from django.db import connection


def insert_columns(obj, overrides: dict | None = None) -> tuple[list[str], list[str], list]:
    """Columns, placeholders and parameters Django's INSERT of `obj` would use
    (field defaults, pre_save, get_db_prep_save); `overrides` maps a column to
    an SQL expression used instead of its parameter."""
    overrides = overrides or {}
    cols, marks, params = [], [], []
    for field in obj._meta.concrete_fields:
        if field.primary_key and getattr(obj, field.attname) is None:
            continue
        cols.append(connection.ops.quote_name(field.column))
        if field.column in overrides:
            marks.append(overrides[field.column])
            continue
        value = field.get_db_prep_save(field.pre_save(obj, True), connection)
        marks.append(field.get_placeholder(value, None, connection) if hasattr(field, "get_placeholder") else "%s")
        params.append(value)
    return cols, marks, params
