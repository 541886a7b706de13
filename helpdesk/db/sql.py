"""Hand-written statements built from model instances, as Django would write them."""
from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

_insert_fields: dict = {}


def _fields_for_insert(model, conn) -> list:
    """(field, quoted column, column, has get_placeholder) of `model`'s concrete
    fields, worked out once per model and database."""
    key = (model, conn.alias)
    fields = _insert_fields.get(key)
    if fields is None:
        fields = _insert_fields[key] = [
            (field, conn.ops.quote_name(field.column), field.column, hasattr(field, "get_placeholder"))
            for field in model._meta.concrete_fields]
    return fields


def insert_columns(obj, overrides: dict | None = None) -> tuple[list[str], list[str], list]:
    """Columns, placeholders and parameters Django's INSERT of `obj` would use
    (field defaults, pre_save, get_db_prep_save); `overrides` maps a column to
    an SQL expression used instead of its parameter.

    Works with the default database's wrapper itself: through the
    `django.db.connection` proxy every attribute read (each field's
    conversion reads `connection.ops`) is a thread-local lookup, about a
    tenth of an ingest's Python time."""
    conn = connections[DEFAULT_DB_ALIAS]
    overrides = overrides or {}
    cols, marks, params = [], [], []
    for field, quoted, column, has_placeholder in _fields_for_insert(type(obj), conn):
        if field.primary_key and getattr(obj, field.attname) is None:
            continue
        cols.append(quoted)
        if column in overrides:
            marks.append(overrides[column])
            continue
        value = field.get_db_prep_save(field.pre_save(obj, True), conn)
        marks.append(field.get_placeholder(value, None, conn) if has_placeholder else "%s")
        params.append(value)
    return cols, marks, params


class Prepared:
    """A queryset compiled once and run again with other values of some of
    its parameters: ORM compilation (~0.3 ms of CPU per lookup) skipped on hot
    paths. `queryset` is built with sentinel values (`slots` maps a name to
    its sentinel, each a value no real parameter has); run(name=value, ...)
    executes the same SQL with those parameters replaced and returns the model
    instances (with select_related) as iterating the queryset would, without
    known related objects (set them on the results yourself)."""

    def __init__(self, queryset, slots: dict):
        compiler = queryset.query.get_compiler(using=queryset.db)
        self.sql, params = compiler.as_sql()  # fills select, klass_info, col_count
        by_value = {value: name for name, value in slots.items()}
        self.params = list(params)
        self.names = [(i, by_value[p]) for i, p in enumerate(self.params)
                      if isinstance(p, (int, str)) and p in by_value]
        if sorted(name for _i, name in self.names) != sorted(slots):
            raise ValueError(f"each slot must be one parameter of the query: {slots} in {params}")
        from django.db.models.query import get_related_populators

        self.compiler = compiler
        self.db = queryset.db
        klass_info, select = compiler.klass_info, compiler.select
        self.model = klass_info["model"]
        fields = klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.init_list = [f[0].target.attname for f in select[self.start:self.end]]
        self.populators = get_related_populators(klass_info, select, self.db)
        self.converters = compiler.get_converters([s[0] for s in select[:compiler.col_count]])

    def run(self, **values) -> list:
        from django.db import connections

        params = list(self.params)
        for i, name in self.names:
            params[i] = values[name]
        with connections[self.db].cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        objs = []
        for row in rows:
            obj = self.model.from_db(self.db, self.init_list, row[self.start:self.end])
            for populator in self.populators:
                populator.populate(row, obj)
            objs.append(obj)
        return objs


_prepared: dict = {}


def prepared(key, build) -> Prepared:
    """The Prepared for `key` on the default database (built by build() on
    first use: a (queryset, slots) pair)."""
    conn = connections[DEFAULT_DB_ALIAS]
    full = (conn.alias, conn.vendor, key)
    found = _prepared.get(full)
    if found is None:
        found = _prepared[full] = Prepared(*build())
    return found
