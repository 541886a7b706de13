"""A cache of report results, keyed on a data version.

Every write that can change a figure bumps the version (the engine's rollup deltas and full
recompute, survey answers and invitations, orders, team names), right away and again
once its transaction commits, so a reader never keeps a result computed from data older than
the last bump. `METRICS_CACHE_SECONDS` bounds how long an entry lives (0 turns the cache off;
the default is 300 s, and 0 under the test runner unless a test turns it on).
"""
from __future__ import annotations

import hashlib
import os

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

VERSION_KEY = "metrics:data-version"


def seconds() -> int:
    value = getattr(settings, "METRICS_CACHE_SECONDS", None)
    if value is None:
        env = os.environ.get("METRICS_CACHE_SECONDS")
        value = int(env) if env not in (None, "") else (0 if getattr(settings, "TESTING", False) else 300)
    return int(value)


def version() -> int:
    value = cache.get(VERSION_KEY)
    if value is None:
        cache.add(VERSION_KEY, 1, timeout=None)
        value = cache.get(VERSION_KEY) or 1
    return int(value)


def _incr() -> None:
    try:
        cache.incr(VERSION_KEY)
    except ValueError:  # evicted or never set
        cache.add(VERSION_KEY, 2, timeout=None)


def bump() -> None:
    """Invalidate every cached result (now, and again after the current transaction commits)."""
    _incr()
    transaction.on_commit(_incr)


def cached(kind: str, sel, compute):
    """compute() for the selection, from the cache when an entry of the current data version exists."""
    ttl = seconds()
    if ttl <= 0:
        return compute()
    parts = (kind, sel.start, sel.end, sel.group_by, sel.channel, sel.team_id, sel.agent_id, sorted(sel.skip))
    key = f"metrics:result:{version()}:" + hashlib.sha1(repr(parts).encode()).hexdigest()
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, ttl)
    return value


def connect_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save

    from conversations.models import Team
    from customers.models import Order

    from .models import SurveyInvitation

    def _bump(**_kwargs):
        bump()

    for model in (SurveyInvitation, Order, Team):
        post_save.connect(_bump, sender=model, weak=False, dispatch_uid=f"metrics-cache-{model._meta.label}")
        post_delete.connect(_bump, sender=model, weak=False, dispatch_uid=f"metrics-cache-del-{model._meta.label}")

    def _user_saved(update_fields=None, **_kwargs):
        # agents are labelled by email or username in the results; a login (last_login) or an
        # availability change saves the user too and must not empty the cache
        if update_fields is None or LABEL_FIELDS & set(update_fields):
            bump()

    user = get_user_model()
    post_save.connect(_user_saved, sender=user, weak=False, dispatch_uid="metrics-cache-user")
    post_delete.connect(_bump, sender=user, weak=False, dispatch_uid="metrics-cache-del-user")


LABEL_FIELDS = {"email", "username", "first_name", "last_name"}
